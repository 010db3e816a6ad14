"""A real webhook receiver on loopback: answers from a script, records every request and checks its
signature with the ``standardwebhooks`` package, as a user's receiver would."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    #: secret -> whether ``Webhook(secret).verify`` accepted the request
    verified: dict[str, bool] = field(default_factory=dict)

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0


class Receiver:
    """``script`` replies are used in order, then ``default``; ``down()`` closes the port (connections
    are refused) and ``up()`` opens the same port again."""

    def __init__(self, secrets: list[str] | None = None, *, port: int = 0, record: bool = True) -> None:
        self.secrets = list(secrets or [])
        self.script: list[Reply] = []
        self.default = Reply()
        self.record = record
        self.received: list[Received] = []
        self.count = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port or _free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes; do not wait for an ACK between

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                reply = receiver._handle(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(self, *_exc) -> None:
        self.down()

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        verified = {}
        if self.record and self.secrets:
            from standardwebhooks import Webhook
            from standardwebhooks.webhooks import WebhookVerificationError

            for secret in self.secrets:
                try:
                    Webhook(secret).verify(body, headers)
                    verified[secret] = True
                except WebhookVerificationError:
                    verified[secret] = False
        with self._arrived:
            self.count += 1
            if self.record:
                self.received.append(Received(time.monotonic(), path, headers, body, verified))
            reply = self.script.pop(0) if self.script else self.default
            self._arrived.notify_all()
        return reply

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        """Block until at least ``n`` requests arrived; fail the test if they did not."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver got {self.count} requests, expected {n}")
                self._arrived.wait(left)
            return list(self.received)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_env(**extra: str) -> dict[str, str]:
    """What webhook tests run with: loopback receivers allowed and a retry schedule of 1.4 s in all."""
    return {"RESIMHUB_WEBHOOK_ALLOW_PRIVATE": "1", "RESIMHUB_WEBHOOK_RETRY_SCHEDULE": "0.2,0.4,0.8", **extra}


def deliveries(client, webhook_id: int, **params) -> list[dict]:
    r = client.get(f"/api/webhooks/{webhook_id}/deliveries", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def wait_deliveries(client, webhook_id: int, *, count: int = 1, final: bool = True, timeout: float = 20.0
                    ) -> list[dict]:
    """Poll the delivery log until ``count`` deliveries exist and (with ``final``) none is in flight."""
    deadline = time.monotonic() + timeout
    while True:
        found = deliveries(client, webhook_id)
        done = [d for d in found if d["status"] not in ("pending", "sending")]
        if len(found) >= count and (not final or len(done) == len(found)):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of webhook {webhook_id} did not settle: {found}")
        time.sleep(0.05)
