"""Log lines that can be correlated: JSON for machines, a short console form for people.

The ids that tie a line to a request, a task or an event live in context variables, so the code
that logs never passes them along: the HTTP middleware binds the request id, the actors' consumer
wrapper binds the task and event ids, and every formatter here reads them. Context variables
follow a request into the threads that serve it (Starlette's thread pool and a2wsgi both copy the
context), and Dramatiq worker threads each get their own.

It lives in ``storage`` because both the gateway and the actors use it, and the layering allows
each of them to depend on ``storage`` only.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FORMATS = ("json", "console")

request_id_var: ContextVar[str | None] = ContextVar("resimhub_request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("resimhub_task_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("resimhub_event_id", default=None)

_VARS = {"request_id": request_id_var, "task_id": task_id_var, "event_id": event_id_var}
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is worth keeping.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def current_ids() -> dict[str, str]:
    """The correlation ids bound in this context (unset ones are left out)."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


@contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Bind ``request_id`` / ``task_id`` / ``event_id`` for the duration of the block."""
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in ids.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339 UTC), level, logger, message, the bound ids, any
    ``extra=`` fields and the exception, if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **current_ids(),
        }
        if record.processName not in (None, "MainProcess"):
            line["process"] = record.processName
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """The classic one-line format, followed by the bound ids in brackets when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = current_ids()
        if not ids:
            return text
        tags = " ".join(f"{name.removesuffix('_id')}={value}" for name, value in ids.items())
        head, sep, rest = text.partition("\n")  # keep a traceback below the tagged line
        return f"{head} [{tags}]{sep}{rest}"


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {fmt!r}")
    return JsonFormatter() if fmt == "json" else ConsoleFormatter()


def _quiet_libraries() -> None:
    logging.getLogger("pika").setLevel(logging.WARNING)


def configure(level: str, fmt: str, *, stream=None) -> None:
    """Route every log record of this process through one handler in ``fmt``.

    Replaces the root handlers (including ones a launcher such as the ``dramatiq`` CLI installed)
    and lets uvicorn's loggers propagate to it, so a process never writes two formats.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    _quiet_libraries()


def dict_config(level: str, fmt: str, *, access_log: bool = True) -> dict[str, Any]:
    """The same setup as :func:`configure`, as a ``logging.config.dictConfig`` document.

    ``uvicorn --workers N`` applies its ``log_config`` in every worker process it spawns, which is
    the only way to reach those processes' logging. The gateway writes its own access lines
    (``resimhub.access``, with the route template, duration and request id); ``access_log=False``
    silences them.
    """
    factory = "storage.logs.JsonFormatter" if fmt == "json" else "storage.logs.ConsoleFormatter"
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {fmt!r}")
    loggers: dict[str, Any] = {
        "uvicorn": {"handlers": [], "propagate": True},
        "uvicorn.error": {"handlers": [], "propagate": True},
        "uvicorn.access": {"handlers": [], "propagate": True},
        "pika": {"level": "WARNING"},
    }
    if not access_log:
        loggers["resimhub.access"] = {"level": "WARNING"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"resimhub": {"()": factory}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "resimhub",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }
