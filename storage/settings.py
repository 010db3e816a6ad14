"""Settings read from ``RESIMHUB_*`` environment variables.

They are read once, by whoever starts a process (the CLI, a worker entry point, a test), with
:func:`load_settings`, and passed down explicitly; nothing reads the environment at import time or
when a :class:`Settings` is built from keywords, so tests can build as many differently configured
apps in one process as they like.

Each setting is declared once below, with its type, default, bounds and meaning; the variable is
``RESIMHUB_`` and the field's name in capitals unless the field says otherwise. Values are taken
with surrounding whitespace removed, and an empty value means the variable is unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict


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

PREFIX = "RESIMHUB_"
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgres")
_BROKER_SCHEMES = ("amqp", "amqps")
_REDIS_SCHEMES = ("redis", "rediss", "unix")

RetryDelay = Annotated[float, Field(ge=0, le=MAX_WEBHOOK_RETRY_DELAY_S)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,  # nan and inf are refused wherever a number is expected
        enable_decoding=False,  # lists are comma-separated text, not JSON (see the validators)
        populate_by_name=True,  # a field with its own variable name is still built by its name
    )

    data_dir: Path = Field(Path(".resimhub"), description="SQLite file, artifacts and snapshots")
    database_url: str = Field("", description="sqlite:// or postgresql+psycopg2:// (postgres:// is taken as the "
                              "latter); empty: the SQLite file in data_dir")
    broker_url: str | None = Field(None, description="amqp:// for RabbitMQ; unset: the in-process broker")
    redis_url: str | None = Field(None, description="redis://, rediss:// or unix://; mirrors task states "
                                  "Celery-compatibly")
    queue_prefix: str = Field("", description="prefix for every queue name, so several hubs (or test runs) "
                              "can share one RabbitMQ: letters, digits, '-', '_' and '.'")
    result_ttl: int = Field(86_400, ge=1, description="seconds a Celery-compatible result document lives in Redis")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body")
    max_upload_bytes: int = Field(64 * 1_048_576, ge=1024, description="largest model upload")
    relay_poll_interval: float = Field(1.0, ge=0.01, description="the relay's backstop polling period (s)")
    relay_batch_size: int = Field(500, ge=1, description="events a relay publishes per pass")
    worker_threads: int = Field(2, ge=1, description="worker threads inside `resimhub up`")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="any case")
    log_format: Literal["json", "console"] | None = Field(None, description="None lets the process choose: "
                                                          "console for `resimhub up`, json otherwise")
    auth: Literal["auto", "required", "off"] = Field("auto", description=(
        "auto: API keys required when the gateway binds a non-loopback address, optional on loopback; "
        "required: always; off: never checked (refused off loopback). See docs/operations.md."))
    write_rate: float = Field(5.0, ge=0.0, description="per-key token bucket for writes: tokens added per second "
                              "(0 turns the limit off)")
    write_burst: int = Field(20, ge=1, description="that bucket's size")
    cors_origins: tuple[str, ...] = Field((), description="comma-separated origins allowed to call the API from a "
                                          "browser (https://app.example.org or *); empty: no CORS headers at all")
    worker_metrics: bool = Field(False, description="add Dramatiq's Prometheus middleware (an exporter on :9191) "
                                 "to RabbitMQ worker processes")
    webhook_retry_schedule: tuple[RetryDelay, ...] = Field(
        DEFAULT_WEBHOOK_RETRY_SCHEDULE, max_length=MAX_WEBHOOK_RETRIES,
        description="comma-separated seconds to wait before each webhook retry, one per retry (docs/webhooks.md)")
    webhook_allow_private: bool = Field(False, description="let webhooks reach loopback, private and link-local "
                                        "addresses (tests, local development)")
    analytics_memory_mb: int = Field(1024, ge=64, description="DuckDB's memory limit (MiB) for a process's "
                                     "analytics reads (it spills beyond it); see analytics/engine.py")
    analytics_threads: int | None = Field(None, ge=1, description="DuckDB's threads for analytics reads; "
                                          "None: one per CPU")
    analytics_readers: int = Field(2, ge=1, le=64, description="analytics reads a process runs at once; the "
                                   "others wait their turn (analytics/engine.py says why)")
    # Limits of the process an uploaded policy runs in; None keeps the defaults of
    # actors.rl.sandbox.SandboxLimits, which owns them and says why.
    sandbox_memory_mb: int | None = Field(None, ge=256, description="address space of the sandbox (MiB)")
    sandbox_cpu_seconds: int | None = Field(None, ge=1, description="CPU seconds the sandbox may use")
    sandbox_load_timeout_s: float | None = Field(None, ge=0.1, validation_alias="RESIMHUB_SANDBOX_LOAD_TIMEOUT",
                                                 description="seconds to read a model and build its network")
    sandbox_step_timeout_s: float | None = Field(None, ge=0.01, validation_alias="RESIMHUB_SANDBOX_STEP_TIMEOUT",
                                                 description="seconds for one batched forward pass")
    sandbox_evaluation_timeout_s: float | None = Field(
        None, ge=1.0, validation_alias="RESIMHUB_SANDBOX_EVALUATION_TIMEOUT",
        description="seconds for a whole evaluation, loading included")
    training_time_limit: float = Field(DEFAULT_TRAINING_TIME_LIMIT_S, ge=1.0, le=MAX_TRAINING_TIME_LIMIT_S,
                                       description="seconds one training run (one attempt of one seed) may train "
                                       "before it fails with training_time_limit, keeping its checkpoint")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **_others: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the keywords given: the environment is read by load_settings, never behind a caller's back.
        return (init_settings,)

    @field_validator("data_dir")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            data_dir = info.data.get("data_dir", Path(".resimhub"))
            return f"sqlite:///{(data_dir / 'resimhub.db').resolve()}"
        _check_scheme(value, _DATABASE_SCHEMES)
        if value.startswith("postgres://"):
            return "postgresql+psycopg2://" + value[len("postgres://"):]
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        return _check_scheme(value, _BROKER_SCHEMES) if value else None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _check_scheme(value, _REDIS_SCHEMES) if value else None

    @field_validator("queue_prefix")
    @classmethod
    def _queue_prefix(cls, value: str) -> str:
        if value and not value.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError("may hold only letters, digits, '-', '_' and '.'")
        return value

    @field_validator("log_level", "log_format", "auth", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        parts = value.split(",") if isinstance(value, str) else value
        origins = tuple(part.strip().rstrip("/") for part in parts if part.strip())
        for origin in origins:
            parsed = urlparse(origin)
            if origin != "*" and (parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path):
                raise ValueError(f"holds {origin!r}, which is not an origin like https://app.example.org or *")
        return origins

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return tuple(value.split(",")) if isinstance(value, str) else value

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

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated again, so every bound still holds."""
        return type(self)(**{**self.model_dump(), **changes})


def _check_scheme(url: str, schemes: tuple[str, ...]) -> str:
    if urlparse(url).scheme not in schemes:
        raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}")
    return url


class _Environment(EnvSettingsSource):
    """pydantic-settings' reading of ``RESIMHUB_*`` variables (prefix, per-field names), over the
    mapping given rather than ``os.environ``; values are stripped and blank ones left out."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.given = {name: value.strip() for name, value in environ.items()
                      if name.startswith(PREFIX) and value.strip()}
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # As EnvSettingsSource keeps os.environ: by lower-case name (the settings are case-insensitive
        # to pydantic-settings; only upper-case RESIMHUB_ names were taken above).
        return {name.lower(): value for name, value in self.given.items()}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: ``os.environ``); raises :class:`SettingsError`."""
    source = _Environment(os.environ if env is None else env)
    try:
        return Settings(**source())
    except ValidationError as exc:
        raise SettingsError(_one_line(exc.errors()[0], source.given)) from None


def variable(field_name: str) -> str:
    """The environment variable of a setting."""
    alias = Settings.model_fields[field_name].validation_alias
    return alias if isinstance(alias, str) else PREFIX + field_name.upper()


#: How each of pydantic's error types reads after ``RESIMHUB_X='value'``; ``{…}`` from the error's context.
_PROBLEMS = {
    "int_parsing": "is not an integer",
    "int_from_float": "is not an integer",
    "float_parsing": "is not a number",
    "finite_number": "is not a finite number",
    "greater_than_equal": "must be at least {ge:g}",
    "less_than_equal": "must be at most {le:g}",
    "bool_parsing": "must be 1 or 0 (true/false, yes/no, on/off)",
    "too_long": "has {actual_length} values; at most {max_length} are allowed",
    "literal_error": "must be {choices}",
    "value_error": "{error}",
}


def _one_line(error: Any, environ: Mapping[str, str]) -> str:
    """``RESIMHUB_X='value' <what is wrong>`` for one of pydantic's errors."""
    field, *where = error["loc"]
    name = field if field.startswith(PREFIX) else variable(field)
    ctx = error.get("ctx") or {}
    choices = str(ctx.get("expected", "")).replace("'", "")  # 'a', 'b' or 'c' -> a, b or c
    problem = _PROBLEMS.get(error["type"], error["msg"]).format(**ctx, choices=choices)
    if where:  # one value of a comma-separated list
        problem = f"value {where[0] + 1} {problem}"
    return f"{name}={environ.get(name, error.get('input'))!r} {problem}".replace("\n", " ")
