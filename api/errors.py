"""The API's one error shape, ``{"error": {"code", "message", "details"}}``, and its exceptions."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Root of every error a route may raise on purpose; carries its HTTP status."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if code:
            self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


class NotFound(ApiError):
    status, code = 404, "not_found"


class Invalid(ApiError):
    status, code = 422, "validation_error"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TooLarge(ApiError):
    status, code = 413, "payload_too_large"


class Unsupported(ApiError):
    status, code = 415, "unsupported_media_type"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def pydantic_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's error list, cut down to what a client can act on and made JSON-safe."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc) or None, "message": err.get("msg", ""), "type": err.get("type", "")})
    return out


NUL_MESSAGE = "text in the request may not contain NUL (\\u0000) characters"


def is_nul_refusal(exc: BaseException) -> bool:
    """psycopg2's refusal of a NUL in a query parameter: the client's input, not a server fault."""
    return isinstance(exc, ValueError) and "NUL (0x00)" in str(exc)
