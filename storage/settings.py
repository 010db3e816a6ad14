"""Settings read from ``RESIMHUB_*`` environment variables.

They are read once, by whoever starts a process (the CLI, a worker entry point, a test), and passed
down explicitly; nothing reads the environment at import time, so tests can build as many differently
configured apps in one process as they like.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse


class SettingsError(ValueError):
    """A malformed setting; the message is one line naming the variable."""


#: Roughly exponential, about 23.7 hours from the first attempt to the eleventh and last.
DEFAULT_WEBHOOK_RETRY_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800)
MAX_WEBHOOK_RETRIES = 50
MAX_WEBHOOK_RETRY_DELAY_S = 7 * 86_400

# -- training limits ----------------------------------------------------------------------------
#: Wall time one attempt of one training run may take before it stops and fails with
#: ``training_time_limit``, keeping its checkpoint: six hours, the train actor's former Dramatiq
#: time limit (RESIMHUB_TRAINING_TIME_LIMIT, seconds).
DEFAULT_TRAINING_TIME_LIMIT_S = 6 * 3600.0
#: The most that setting may be; the train actor's Dramatiq time limit is a backstop just above it.
MAX_TRAINING_TIME_LIMIT_S = 7 * 86_400.0


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".resimhub")
    database_url: str = ""
    broker_url: str | None = None
    redis_url: str | None = None
    #: Prefix for every queue name, so several hubs (or test runs) can share one RabbitMQ.
    queue_prefix: str = ""
    #: Seconds a Celery-compatible result document lives in Redis.
    result_ttl: int = 86_400
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 64 * 1_048_576
    relay_poll_interval: float = 1.0
    relay_batch_size: int = 500
    worker_threads: int = 2
    log_level: str = "INFO"
    #: ``json`` or ``console``; None lets the process choose (console for ``resimhub up``, else json).
    log_format: str | None = None
    #: ``auto``: API keys required when the gateway binds a non-loopback address, optional on loopback;
    #: ``required``: always; ``off``: never checked (refused off loopback). See docs/operations.md.
    auth: str = "auto"
    #: Per-key token bucket for writes: tokens added per second (0 turns the limit off) and its size.
    write_rate: float = 5.0
    write_burst: int = 20
    #: Origins allowed to call the API from a browser; empty means no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    #: Add Dramatiq's Prometheus middleware (an exporter on :9191) to RabbitMQ worker processes.
    worker_metrics: bool = False
    #: Seconds to wait before each webhook retry; one entry per retry (see docs/webhooks.md).
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    #: Let webhooks reach loopback, private and link-local addresses (tests, local development).
    webhook_allow_private: bool = False
    #: DuckDB's memory limit (MiB) for a process's analytics reads (it spills beyond it); see analytics/engine.py.
    analytics_memory_mb: int = 1024
    #: DuckDB's threads for analytics reads; ``None``: one per CPU.
    analytics_threads: int | None = None
    #: Limits of the process an uploaded policy runs in (``RESIMHUB_SANDBOX_*``); ``None`` keeps the
    #: defaults of :class:`actors.rl.sandbox.SandboxLimits`, which owns them and says why.
    sandbox_memory_mb: int | None = None
    sandbox_cpu_seconds: int | None = None
    sandbox_load_timeout_s: float | None = None
    sandbox_step_timeout_s: float | None = None
    sandbox_evaluation_timeout_s: float | None = None
    #: Seconds one training run (one attempt of one seed) may train before it fails (see above).
    training_time_limit: float = DEFAULT_TRAINING_TIME_LIMIT_S
    extra: dict = field(default_factory=dict)

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    def with_overrides(self, **changes) -> Settings:
        return replace(self, **changes)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0,
           maximum: float = math.inf) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    if value > maximum:
        raise SettingsError(f"{name}={raw!r} must be at most {maximum:g}")
    return value


def _optional(parse, env: Mapping[str, str], name: str, minimum):
    """``parse``'s value, or ``None`` when the variable is unset (the owner's default applies)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return parse(env, name, 0, minimum=minimum)


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes:
        raise SettingsError(f"{name}={raw!r} must be a URL with scheme {' or '.join(schemes)}")
    return raw


def _schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} must be comma-separated seconds, e.g. 5,30,120") from None
    if len(delays) > MAX_WEBHOOK_RETRIES:
        raise SettingsError(f"{name}={raw!r} has {len(delays)} retries; at most {MAX_WEBHOOK_RETRIES} are allowed")
    if any(not 0 <= d <= MAX_WEBHOOK_RETRY_DELAY_S for d in delays):
        raise SettingsError(f"{name}={raw!r}: every delay must be between 0 and {MAX_WEBHOOK_RETRY_DELAY_S} seconds")
    return delays


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} must be 1 or 0 (true/false, yes/no, on/off)")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={raw!r} must be {' or '.join(choices)}")
    return value


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    for origin in origins:
        parsed = urlparse(origin)
        if origin != "*" and (parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path):
            raise SettingsError(f"{name}: {origin!r} is not an origin like https://app.example.org or *")
    return origins


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: ``os.environ``); raises :class:`SettingsError`."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("RESIMHUB_DATA_DIR") or ".resimhub").expanduser()
    database_url = _url(
        env, "RESIMHUB_DATABASE_URL", ("sqlite", "postgresql", "postgresql+psycopg2", "postgres")
    )
    if database_url is None:
        database_url = f"sqlite:///{(data_dir / 'resimhub.db').resolve()}"
    elif database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg2://" + database_url[len("postgres://"):]
    log_level = (env.get("RESIMHUB_LOG_LEVEL") or "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"RESIMHUB_LOG_LEVEL={log_level!r} must be DEBUG, INFO, WARNING or ERROR")
    prefix = env.get("RESIMHUB_QUEUE_PREFIX", "")
    if prefix and not prefix.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SettingsError(f"RESIMHUB_QUEUE_PREFIX={prefix!r} may hold only letters, digits, '-', '_' and '.'")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=_url(env, "RESIMHUB_BROKER_URL", ("amqp", "amqps")),
        redis_url=_url(env, "RESIMHUB_REDIS_URL", ("redis", "rediss", "unix")),
        queue_prefix=prefix,
        result_ttl=_int(env, "RESIMHUB_RESULT_TTL", 86_400, minimum=1),
        max_body_bytes=_int(env, "RESIMHUB_MAX_BODY_BYTES", 1_048_576, minimum=1024),
        max_upload_bytes=_int(env, "RESIMHUB_MAX_UPLOAD_BYTES", 64 * 1_048_576, minimum=1024),
        relay_poll_interval=_float(env, "RESIMHUB_RELAY_POLL_INTERVAL", 1.0, minimum=0.01),
        relay_batch_size=_int(env, "RESIMHUB_RELAY_BATCH_SIZE", 500, minimum=1),
        worker_threads=_int(env, "RESIMHUB_WORKER_THREADS", 2, minimum=1),
        log_level=log_level,
        log_format=_choice(env, "RESIMHUB_LOG_FORMAT", ("json", "console"), None),
        auth=_choice(env, "RESIMHUB_AUTH", ("auto", "required", "off"), "auto"),
        write_rate=_float(env, "RESIMHUB_WRITE_RATE", 5.0),
        write_burst=_int(env, "RESIMHUB_WRITE_BURST", 20, minimum=1),
        cors_origins=_origins(env, "RESIMHUB_CORS_ORIGINS"),
        worker_metrics=_bool(env, "RESIMHUB_WORKER_METRICS", False),
        webhook_retry_schedule=_schedule(env, "RESIMHUB_WEBHOOK_RETRY_SCHEDULE", DEFAULT_WEBHOOK_RETRY_SCHEDULE),
        webhook_allow_private=_bool(env, "RESIMHUB_WEBHOOK_ALLOW_PRIVATE", False),
        analytics_memory_mb=_int(env, "RESIMHUB_ANALYTICS_MEMORY_MB", 1024, minimum=64),
        analytics_threads=_optional(_int, env, "RESIMHUB_ANALYTICS_THREADS", minimum=1),
        sandbox_memory_mb=_optional(_int, env, "RESIMHUB_SANDBOX_MEMORY_MB", minimum=256),
        sandbox_cpu_seconds=_optional(_int, env, "RESIMHUB_SANDBOX_CPU_SECONDS", minimum=1),
        sandbox_load_timeout_s=_optional(_float, env, "RESIMHUB_SANDBOX_LOAD_TIMEOUT", minimum=0.1),
        sandbox_step_timeout_s=_optional(_float, env, "RESIMHUB_SANDBOX_STEP_TIMEOUT", minimum=0.01),
        sandbox_evaluation_timeout_s=_optional(_float, env, "RESIMHUB_SANDBOX_EVALUATION_TIMEOUT", minimum=1.0),
        training_time_limit=_float(env, "RESIMHUB_TRAINING_TIME_LIMIT", DEFAULT_TRAINING_TIME_LIMIT_S, minimum=1.0,
                                   maximum=MAX_TRAINING_TIME_LIMIT_S),
    )
