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
        """Start a hub process; its stderr goes to a file under the data dir's ``logs/``.

        Not to a pipe: nobody reads a pipe while the test runs, and once its 64 KiB buffer is full
        the process blocks on its next log line (dramatiq's parent stops forwarding its children's
        logs, so every worker thread hangs). ``proc.stderr`` reads that file, as a pipe would.
        """
        logs = self.settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{len(self.processes):02d}-{'-'.join(a for a in argv if not a.startswith('-'))[:40]}.log"
        with path.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, *argv], env={**os.environ, **self.env, **(env or {})},
                                    stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True)
        proc.stderr = path.open("rb")
        self.processes.append(proc)
        return proc

    def spawn_worker(self, processes: int = 1, threads: int = 2, env: dict[str, str] | None = None
                     ) -> subprocess.Popen:
        return self.spawn("-m", "dramatiq", "actors.worker", "--processes", str(processes), "--threads",
                          str(threads), env=env)

    def spawn_relay(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.spawn("-m", "api.cli", "relay", env=env)


@contextmanager
def running_cluster(tmp_path, *, workers: int = 1, relay: bool = True, env: dict[str, str] | None = None):
    """``env`` overrides the hub's settings for the in-process gateway and every spawned process alike
    (e.g. ``RESIMHUB_REDIS_URL`` through a :class:`~tests.support.tcpproxy.TcpProxy`)."""
    extra = dict(env or {})
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
            **extra,
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
                if proc.stderr is not None:
                    proc.stderr.close()
            storage.close()
            delete_queues(prefix)
