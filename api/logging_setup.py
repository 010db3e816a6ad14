"""Request ids and access lines: how one HTTP request is found again in the logs.

The request id comes from the client's ``X-Request-ID`` when it sent a sane one (so a caller or a
proxy can follow its own id through), otherwise a new one; it is echoed in the response and bound
for every log line written while the request runs (:mod:`storage.logs`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from storage.logs import bound

access_log = logging.getLogger("resimhub.access")

_SANE_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
#: Where the metrics middleware leaves the route template it resolved, for the access line.
ROUTE_KEY = "resimhub.route"


def incoming_request_id(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1").strip()
            return candidate if _SANE_ID.match(candidate) else None
    return None


class RequestContext:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with bound(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if access_log.isEnabledFor(logging.INFO):
                    method, path = scope["method"], scope["path"]
                    access_log.info("%s %s %d", method, path, status, extra={
                        "method": method, "path": path, "route": scope.get(ROUTE_KEY), "status": status,
                        "duration_s": round(time.perf_counter() - start, 6),
                        "client": (scope.get("client") or (None,))[0]})
