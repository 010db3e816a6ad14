"""Exceptions of the RL engine.

One root type so that callers (actors, routes, the CLI) can catch everything the engine raises on
purpose with a single ``except RLError`` and let genuine bugs surface as ordinary tracebacks. Each
error carries what an HTTP layer needs (a stable ``code`` and a ``status`` hint) so that the engine
stays free of HTTP while the API still answers with the right 4xx.
"""

from __future__ import annotations


class RLError(Exception):
    """Root of every error the RL engine raises deliberately."""

    code: str = "rl_error"
    status: int = 422

    def to_dict(self) -> dict:
        """The ``{"code", "message", "details"}`` triple the API's error envelope expects."""
        return {"code": self.code, "message": str(self), "details": {}}


# Codes whose natural HTTP answer is not 422 (unprocessable content).
_STATUS_BY_CODE = {
    "pickle_refused": 415,
    "unsupported_format": 415,
    "unsafe_global": 415,
    "vecnormalize_pickle": 415,
    "too_large": 413,
    "too_many_tensors": 413,
}


class ModelFileError(RLError):
    """A model file was refused or could not be read.

    ``code`` is machine-readable and stable (``pickle_refused``, ``unsupported_format``,
    ``truncated``, ``shape_mismatch``, ``too_large``, ``too_many_tensors``, ``bad_manifest``,
    ``unsafe_global``, ``bad_content``, ``ambiguous_layers`` (candidates in ``details``),
    ``unsupported_policy``, ``unsupported_activation``, ``vecnormalize_pickle``,
    ``bad_normalization``); ``status`` is the HTTP status an API should answer with.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 details: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status if status is not None else _STATUS_BY_CODE.get(code, 422)
        self.details = dict(details or {})

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self), "details": dict(self.details)}


class PolicyMismatchError(ModelFileError):
    """A policy does not fit an environment's spaces (wrong input size, action count or kind).

    A subclass of :class:`ModelFileError` because, for an upload, the file is what is wrong; the
    code is always ``shape_mismatch``.
    """

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__("shape_mismatch", message, details=details)


class EnvSpecError(RLError):
    """An environment id is unknown or cannot be built here (e.g. a missing optional dependency).

    ``close_matches`` lists registered ids that look like the one asked for, so that a typo can be
    answered with a suggestion instead of a bare "not found".
    """

    code = "unknown_environment"
    status = 422

    def __init__(self, message: str, close_matches: list[str] | None = None, *,
                 code: str | None = None, env_id: str | None = None, extra: str | None = None) -> None:
        super().__init__(message)
        self.close_matches = list(close_matches or [])
        self.env_id = env_id
        #: The package extra that would make the environment available (``box2d``, ``mujoco``).
        self.extra = extra
        if code is not None:
            self.code = code

    def to_dict(self) -> dict:
        details = {"env_id": self.env_id, "close_matches": list(self.close_matches)}
        if self.extra is not None:
            details["extra"] = self.extra
        return {"code": self.code, "message": str(self), "details": details}


class OutOfRange(RLError):
    """A hyperparameter or budget outside the range its agent declares (see docs/agents.md).

    Carries the field, the bound that was crossed and the offending value, so that an API can name
    all three in its answer; ``bound`` is ``"maximum"`` or ``"minimum"``.
    """

    code = "out_of_range"

    def __init__(self, field: str, limit: int, value, *, bound: str = "maximum", message: str | None = None) -> None:
        if message is None:
            relation = "exceeds its limit of" if bound == "maximum" else "is below its minimum of"
            message = f"{field}={value!r} {relation} {limit}"
        super().__init__(message)
        self.field, self.limit, self.value, self.bound = field, limit, value, bound
        self.details = {"field": field, "limit": limit, "value": value, "bound": bound}

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self), "details": dict(self.details)}
