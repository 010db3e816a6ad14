"""Running a whole hub inside the test process: storage, broker, worker, relay and the gateway."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from dramatiq import Worker
from fastapi.testclient import TestClient

from actors.relay import Relay
from actors.runtime import Runtime, boot
from api.app import create_app
from storage.context import Storage, open_storage
from storage.migrate import upgrade
from storage.settings import Settings, load_settings


@dataclass
class Hub:
    settings: Settings
    storage: Storage
    runtime: Runtime | None
    client: TestClient
    relay: Relay | None

    def wait_task(self, task_id: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.client.get(f"/api/tasks/{task_id}", params={"wait": 5}).json()
            if body["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                return body


def settings_for(tmp_path, **env: str) -> Settings:
    return load_settings({"RESIMHUB_DATA_DIR": str(tmp_path / "data"), "RESIMHUB_RELAY_POLL_INTERVAL": "0.2", **env})


@contextmanager
def running_hub(settings: Settings, *, worker: bool = True, relay: bool = True):
    """A migrated hub; with ``worker``/``relay`` false the test drives those parts itself."""
    upgrade(settings)
    storage = open_storage(settings)
    runtime = None
    threads: list[threading.Thread] = []
    dramatiq_worker = None
    the_relay = None
    if worker or relay:
        runtime = boot(settings, storage=storage)
        runtime.broker.emit_after("process_boot")
    if worker:
        dramatiq_worker = Worker(runtime.broker, worker_threads=2, worker_timeout=50)
        dramatiq_worker.start()
    if relay:
        the_relay = Relay(storage, runtime.broker, runtime.actors)
        t = threading.Thread(target=the_relay.run, daemon=True)
        t.start()
        threads.append(t)
    client = TestClient(create_app(storage, broker=runtime.broker if runtime else None), raise_server_exceptions=False)
    try:
        yield Hub(settings=settings, storage=storage, runtime=runtime, client=client, relay=the_relay)
    finally:
        client.close()
        if the_relay is not None:
            the_relay.stop()
        for t in threads:
            t.join(timeout=5)
        if dramatiq_worker is not None:
            dramatiq_worker.stop(timeout=5000)
        if runtime is not None:
            runtime.close()
        else:
            storage.close()
