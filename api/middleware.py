"""ASGI middleware: request body size limits, enforced before any route reads the body."""

from __future__ import annotations

import json

from api.errors import error_body


class BodyLimit:
    """Refuse bodies over the limit with 413, whether announced by Content-Length or streamed.

    Uploads get their own, larger limit by path prefix.
    """

    def __init__(self, app, max_bytes: int, upload_bytes: int, upload_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes
        self.upload_prefixes = upload_prefixes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = self.upload_bytes if path.startswith(self.upload_prefixes) else self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _reject(send, 400, "bad_request", "Content-Length is not a number")
                if declared > limit:
                    return await _too_large(send, limit)
        seen = 0
        rejected = False

        async def limited_receive():
            # Past the limit, answer 413 ourselves and tell the app the client went away, so no
            # route or body parser ever sees a partial body.
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    rejected = True
                    await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _too_large(send, limit: int) -> None:
    await _reject(send, 413, "payload_too_large", f"request body larger than {limit} bytes", {"limit_bytes": limit})


async def _reject(send, status: int, code: str, message: str, details=None) -> None:
    body = json.dumps(error_body(code, message, details)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
