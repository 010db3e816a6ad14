"""Readiness of each dependency, reported separately so an operator sees which one is down."""

from __future__ import annotations

import time

from sqlalchemy import text

from storage.context import Storage


def _timed(check) -> dict:
    start = time.perf_counter()
    try:
        detail = check()
        return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2), **(detail or {})}
    except Exception as exc:  # noqa: BLE001 - any failure is the answer, not an error
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


def readiness(storage: Storage) -> dict:
    settings = storage.settings

    def database():
        with storage.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"dialect": storage.db.dialect}

    def broker():
        if not settings.broker_url:
            return {"kind": "embedded"}
        import pika

        params = pika.URLParameters(settings.broker_url)
        params.socket_timeout = 2
        params.blocked_connection_timeout = 2
        params.connection_attempts = 1
        pika.BlockingConnection(params).close()
        return {"kind": "rabbitmq"}

    def redis():
        if storage.channel is None:
            return {"kind": "not configured"}
        storage.channel.ping()
        return {"kind": "redis"}

    checks = {"database": _timed(database), "broker": _timed(broker), "redis": _timed(redis)}
    # The gateway can take work as long as the database answers: events wait in the outbox while the
    # broker is away and task state is read from the database while Redis is. Those two are reported
    # (and alerted on through metrics) but do not take the gateway out of rotation.
    degraded = [name for name in ("broker", "redis") if not checks[name]["ok"]]
    return {"ready": checks["database"]["ok"], "degraded": degraded, "checks": checks}
