"""ASGI middleware: request body size limits and strict JSON, enforced before any route reads the body.

Both sit in front of the FastAPI routes *and* the mounted Flask app, so the two layers cannot
disagree about what a request may carry.
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool

from api.errors import error_body
from api.jsonbody import refusal

#: Bodies larger than this are checked in the thread pool rather than on the event loop.
_INLINE_CHECK_BYTES = 64 * 1024


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


class StrictJsonBodies:
    """Refuse JSON bodies holding non-finite numbers (422) or nesting deeper than
    :data:`api.jsonbody.MAX_DEPTH` (400), before either API layer parses them.

    A body is checked when it is declared JSON (``application/json``, ``application/*+json``) or
    declares no type at all, because FastAPI and ``/benchmark/run`` read an untyped body as JSON.
    Such a body is read whole (``BodyLimit``, outside this middleware, bounds it) and handed on
    unchanged; any other body (multipart uploads, forms) streams through untouched.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _may_carry_json(scope.get("headers", ())):
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away, or BodyLimit has already answered 413: nothing to answer.
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            problem = refusal(body) if len(body) <= _INLINE_CHECK_BYTES else await run_in_threadpool(refusal, body)
            if problem is not None:
                return await _reject(send, problem.status, problem.code, problem.message, problem.details)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, whenever it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _may_carry_json(headers) -> bool:
    content_type = None
    has_body = False
    for name, value in headers:
        if name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
        elif name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            has_body = True
    if content_type is None:
        return has_body
    return content_type == b"application/json" or (content_type.startswith(b"application/")
                                                    and content_type.endswith(b"+json"))


async def _too_large(send, limit: int) -> None:
    await _reject(send, 413, "payload_too_large", f"request body larger than {limit} bytes", {"limit_bytes": limit})


async def _reject(send, status: int, code: str, message: str, details=None) -> None:
    body = json.dumps(error_body(code, message, details)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
