"""A hub on the machine's real PostgreSQL, RabbitMQ and Redis, with workers in separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from fastapi.testclient import TestClient

from api.app import create_app
from storage.context import Storage, open_storage
from storage.migrate import upgrade
from storage.settings import Settings, load_settings
from tests.support.hubs import Hub
from tests.support.services import delete_queues, fresh_postgres_database, rabbitmq_url, redis_url


@dataclass
class Cluster(Hub):
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, *argv], env={**os.environ, **self.env, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.processes.append(proc)
        return proc

    def spawn_worker(self, processes: int = 1, threads: int = 2) -> subprocess.Popen:
        return self.spawn("-m", "dramatiq", "actors.worker", "--processes", str(processes), "--threads",
                          str(threads))

    def spawn_relay(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.spawn("-m", "api.cli", "relay", env=env)


@contextmanager
def running_cluster(tmp_path, *, workers: int = 1, relay: bool = True):
    with fresh_postgres_database() as db_url:
        prefix = f"t{uuid.uuid4().hex[:10]}."
        env = {
            "RESIMHUB_DATA_DIR": str(tmp_path / "data"),
            "RESIMHUB_DATABASE_URL": db_url,
            "RESIMHUB_BROKER_URL": rabbitmq_url(),
            "RESIMHUB_REDIS_URL": redis_url(),
            "RESIMHUB_QUEUE_PREFIX": prefix,
            "RESIMHUB_RELAY_POLL_INTERVAL": "0.2",
            "RESIMHUB_RESULT_TTL": "900",
        }
        settings: Settings = load_settings(env)
        upgrade(settings)
        storage: Storage = open_storage(settings)
        client = TestClient(create_app(storage), raise_server_exceptions=False)
        cluster = Cluster(settings=settings, storage=storage, runtime=None, client=client, relay=None, env=env)
        try:
            for _ in range(workers):
                cluster.spawn_worker()
            if relay:
                cluster.spawn_relay()
            yield cluster
        finally:
            client.close()
            for proc in cluster.processes:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, 15)
            for proc in cluster.processes:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
            storage.close()
            delete_queues(prefix)
