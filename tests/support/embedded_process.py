"""``resimhub up`` as a real process of its own (SQLite, in-process broker, worker and relay threads),
on a data directory and port of its own, so that a test can ``kill -9`` it and start it again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedHub:
    """One data directory, started and killed as often as the test likes; each life logs to its own
    file under ``<data>/logs/`` (``up-<port>-<life>.log``)."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.data_dir = tmp_path / "data"
        self.port = free_port()
        # Nothing of the test process's own configuration leaks in: no database, broker or Redis URL.
        base = {k: v for k, v in os.environ.items() if not k.startswith("RESIMHUB_")}
        self.env = {**base, "RESIMHUB_DATA_DIR": str(self.data_dir), "RESIMHUB_RELAY_POLL_INTERVAL": "0.2",
                    "RESIMHUB_LOG_LEVEL": "INFO", **env}
        self.proc: subprocess.Popen | None = None
        self.lives = 0
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "resimhub.db"

    def _log_path(self, life: int) -> Path:
        return self.data_dir / "logs" / f"up-{self.port}-{life}.log"

    def log(self, life: int) -> str:
        return self._log_path(life).read_text(errors="replace")

    def start(self, timeout: float = 90.0) -> EmbeddedHub:
        assert self.proc is None, "already running"
        self.lives += 1
        path = self._log_path(self.lives)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as sink:
            self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--port", str(self.port)],
                                         env=self.env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"resimhub up exited with {self.proc.returncode}:\n{self.log(self.lives)}")
            try:
                if self.client.get("/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"resimhub up did not answer within {timeout}s:\n{self.log(self.lives)}")
            time.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL to the hub's whole process group (the process and its sandbox children): no goodbye."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.client.close()

    def wait_task(self, task_id: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.client.get(f"/api/tasks/{task_id}", params={"wait": 5}).json()
            if body["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                return body
