"""API keys on every route, and a per-key rate limit on writes.

Checked in one ASGI middleware rather than a FastAPI dependency so that the Flask ``/api/v1`` mount,
unknown paths and every future route are covered without anyone remembering to add it.

The model (docs/operations.md has the long form):

* ``GET``/``HEAD``/``OPTIONS`` need ``read``; every other method needs ``write``; ``/api/keys`` and
  ``/api/webhooks`` need ``admin`` whatever the method (a webhook can send every event anywhere).
* ``/health``, ``/ready`` and ``/metrics`` are always open: orchestrators and Prometheus probe them
  without credentials. They reveal no data beyond counts.
* ``auth="required"``: every other request needs a valid key. ``resimhub api`` / ``up`` resolve
  ``auto`` to ``required`` when they bind a non-loopback address; a connection that arrives on a
  non-loopback interface is treated the same way even if the app was started some other way.
* Otherwise (loopback) a request without a key is let through with full rights, as a local CLI
  user has them anyway; a request that does send a key still has it checked.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from api.errors import error_body
from storage import keys
from storage.context import Storage
from storage.keys import Principal

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
ADMIN_PREFIXES = ("/api/keys", "/api/webhooks")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the gateway reachable from this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def required_scope(method: str, path: str) -> str:
    if any(path == prefix or path.startswith(prefix + "/") for prefix in ADMIN_PREFIXES):
        return "admin"
    return "read" if method in READ_METHODS else "write"


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens a second up to ``burst``. Per process: with
    ``--workers N`` a key may do N times the rate across the gateway."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


def _connection_off_loopback(scope) -> bool:
    server = scope.get("server")
    if not server:
        return False
    try:
        return not ipaddress.ip_address(str(server[0]).strip("[]")).is_loopback
    except ValueError:
        return False  # not an address (a test client, a unix socket): the mode decides alone


def _bearer(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return value.decode("latin-1")
    return None


class ApiKeyAuth:
    def __init__(self, app, storage: Storage, *, mode: str, buckets: TokenBuckets) -> None:
        self.app = app
        self.storage = storage
        self.mode = mode
        self.buckets = buckets

    def _lookup(self, token: str) -> Principal | None:
        with self.storage.db.session() as session:
            return keys.authenticate(session, token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.mode == "off" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = _bearer(scope)
        if header is None:
            if self.mode == "required" or _connection_off_loopback(scope):
                return await _deny(send, 401, "unauthorized",
                                   "an API key is required: send 'Authorization: Bearer rh_…'")
            return await self.app(scope, receive, send)
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            return await _deny(send, 401, "unauthorized", "the Authorization header must be 'Bearer <API key>'")
        try:
            principal = await run_in_threadpool(self._lookup, token.strip())
        except Exception:  # noqa: BLE001 - no database, no way to check: say so rather than 500
            return await _deny(send, 503, "database_unavailable", "cannot check the API key; retry shortly",
                               headers={"retry-after": "5"}, challenge=False)
        if principal is None:
            return await _deny(send, 401, "unauthorized", "the API key is not valid or has been revoked")
        needed = required_scope(scope["method"], scope["path"])
        if not keys.grants(principal.scope, needed):
            return await _deny(send, 403, "forbidden", f"this needs a key with the {needed!r} scope",
                               details={"required_scope": needed, "key_scope": principal.scope}, challenge=False)
        if needed != "read":
            wait = self.buckets.take(principal.key_id)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                return await _deny(send, 429, "rate_limited", "too many writes with this key; slow down",
                                   details={"retry_after_s": retry_after, "rate_per_s": self.buckets.rate,
                                            "burst": self.buckets.burst},
                                   headers={"retry-after": str(retry_after)}, challenge=False)
        scope.setdefault("state", {})["principal"] = principal
        return await self.app(scope, receive, send)


async def _deny(send, status: int, code: str, message: str, *, details=None, headers=None,
                challenge: bool = True) -> None:
    body = json.dumps(error_body(code, message, details)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if challenge:
        raw.append((b"www-authenticate", b'Bearer realm="resimhub"'))
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def install(app, storage: Storage) -> None:
    """Add the key check (and, when configured, CORS in front of it so preflights need no key)."""
    settings = storage.settings
    app.add_middleware(ApiKeyAuth, storage=storage, mode=settings.auth,
                       buckets=TokenBuckets(settings.write_rate, settings.write_burst))
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["Location", "Retry-After", "X-Request-ID"], max_age=600)
