"""Access to the machine's real PostgreSQL, RabbitMQ and Redis, isolated per test run.

Outside CI a missing service skips the tests that need it; with ``CI=true`` it fails them, so a
green CI run always means the integration tests really ran.
"""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager

import pytest

PG_ADMIN_DSN = os.environ.get("RESIMHUB_TEST_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
PG_HOST = "127.0.0.1:5432"
AMQP_HOSTPORT = ("127.0.0.1", 5672)
REDIS_HOSTPORT = ("127.0.0.1", 6379)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a missing service is a failure)")
    pytest.skip(message)


@contextmanager
def fresh_postgres_database():
    """A new, empty database, dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg2

    require("PostgreSQL", "127.0.0.1", 5432)
    name = f"rh_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://postgres@{PG_HOST}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def rabbitmq_url(port: int = 5672) -> str:
    require("RabbitMQ", *AMQP_HOSTPORT)
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F"


def delete_queues(prefix: str) -> None:
    """Remove every queue (and Dramatiq's .DQ/.XQ companions) this run declared."""
    import pika

    from actors.bus import QUEUES

    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url()))
    try:
        channel = conn.channel()
        for queue in QUEUES:
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(prefix + queue + suffix)
    finally:
        conn.close()


def redis_url(db: int = 11) -> str:
    require("Redis", *REDIS_HOSTPORT)
    return f"redis://127.0.0.1:6379/{db}"
