"""The JSON the API accepts: RFC 8259 documents whose numbers are finite and whose nesting is bounded.

Python's :mod:`json` is more lenient than the standard and than the databases behind it: it reads
``NaN``, ``Infinity`` and ``-Infinity`` (not JSON at all), turns ``1e999`` into ``inf``, and recurses
once per nesting level until the interpreter's recursion limit ends the request with a 500. A
non-finite number then fails wherever it goes next, differently on each path: PostgreSQL's JSON
types refuse it (a 422 after the validation already passed), SQLite stores it and the answer that
echoes it cannot be encoded (a 500 *after* the commit, so the client believes a committed request
failed), and Flask's encoder writes ``NaN`` back to the client.

So the rule is enforced once, in front of both API layers: :class:`api.middleware.StrictJsonBodies`
reads every JSON body and refuses, with a 4xx in the one error shape, any body that :func:`refusal`
objects to, before a route, a body parser or a database sees it. The routes that decode JSON
themselves (``/benchmark/run`` on both layers, the Flask body reader) use :func:`loads`, so the
definition of acceptable JSON lives in this module only.
"""

from __future__ import annotations

import json
import math
from typing import Any

from api.errors import ApiError

#: The deepest nesting of arrays and objects a body may have (a top-level object is depth 1). Every
#: request body the API defines is at most 4 deep (``hyperparams`` holding a list of layer sizes);
#: 32 leaves room for any reasonable client while keeping every recursive consumer (the parser,
#: Pydantic, SQLAlchemy's JSON columns, the outbox envelope) far from Python's recursion limit.
MAX_DEPTH = 32

NON_FINITE_MESSAGE = ("JSON numbers must be finite: NaN, Infinity, -Infinity and numbers beyond the range of a "
                      "64-bit float (e.g. 1e999) are refused")


class HostileJson(ApiError):
    """A body that is JSON to Python but not to the rest of the system (see the module docstring):
    400 for nesting beyond :data:`MAX_DEPTH` (the document's shape), 422 for a non-finite number
    (a value out of range, as the API answers numbers too large to store)."""

    status = 400

    def __init__(self, message: str, *, status: int = 400, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.status = status


def malformed() -> ApiError:
    return ApiError("the request body is not valid JSON", code="malformed_json")


def loads(raw: bytes | str) -> Any:
    """Decode a request body; raises :class:`ApiError` (4xx) for malformed and for hostile JSON."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # JSONDecodeError, undecodable bytes, an integer of more than 4300 digits
        raise malformed() from None
    problem = _check(value)
    if problem is not None:
        raise problem
    return value


def refusal(raw: bytes) -> HostileJson | None:
    """Why ``raw`` must be refused as hostile, or ``None``.

    Malformed JSON is *not* refused here: the layer that reads the body answers it with its own
    ``malformed_json`` error (FastAPI's carries the position of the mistake), and a route that takes
    no body is not made to care about one.
    """
    try:
        value = json.loads(raw)
    except RecursionError:
        return _too_deep()
    except ValueError:
        return None
    return _check(value)


def _check(value: Any) -> HostileJson | None:
    """The first non-finite number or over-deep container, walked without recursion."""
    stack: list[tuple[Any, tuple[str, ...], int]] = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                field = _field(path)
                return HostileJson(f"{field or 'the body'}: {NON_FINITE_MESSAGE}", status=422,
                                   code="non_finite_number",
                                   details=[{"field": field, "message": NON_FINITE_MESSAGE, "type": "finite_number",
                                             "value": str(item)}])
        elif isinstance(item, dict | list):
            if depth + 1 > MAX_DEPTH:
                return _too_deep(_field(path))
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, (*path, str(key)), depth + 1) for key, child in children)
    return None


def _field(path: tuple[str, ...]) -> str | None:
    """A location in the body in the form the API's validation errors use (``hyperparams.gamma``)."""
    return ".".join(path) or None


def _too_deep(field: str | None = None) -> HostileJson:
    message = f"the request body nests arrays and objects deeper than {MAX_DEPTH} levels"
    return HostileJson(message, code="json_too_deep",
                       details=[{"field": field, "message": message, "type": "too_deep", "max_depth": MAX_DEPTH}])
