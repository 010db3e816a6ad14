"""Task state: created in the caller's transaction, mirrored to the result channel after commit.

Every state change goes through these functions so that the database row, the Celery-compatible
document and the polling API never disagree about what a task is doing. :class:`TaskStatus` is the
vocabulary; the Celery names for it are kept in one place, :mod:`storage.result_channel`.
"""

from __future__ import annotations

import builtins
import json
import traceback as tb
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.models import Task, utcnow

if TYPE_CHECKING:  # the channel imports TaskStatus from here
    from storage.result_channel import CeleryResultChannel


class TaskStatus(StrEnum):
    """What a task is doing, as the database stores it and the polling API shows it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
#: The fields of an error document a client may see (no traceback, no Celery type).
PUBLIC_ERROR_FIELDS = ("type", "code", "message", "details", "retryable")
#: The highest ``fraction`` a task that is not finished may show; 1.0 is written by :func:`succeed`.
RUNNING_CEILING = 0.999
_CHANGED_KEY = "resimhub_tasks_changed"


class TaskStateError(Exception):
    """A transition the task's current state does not allow (e.g. finishing a cancelled task)."""


def install_channel_hook(sessions: sessionmaker, channel: CeleryResultChannel | None) -> None:
    if channel is None:
        return

    def _reload(task_ids: list[str]) -> list[Task]:
        with sessions() as session:
            return list(session.scalars(select(Task).where(Task.id.in_(task_ids))))

    channel.reload = _reload

    @sa_event.listens_for(sessions, "after_commit")
    def _mirror(session: Session) -> None:
        for task in session.info.pop(_CHANGED_KEY, {}).values():
            channel.write(task)

    @sa_event.listens_for(sessions, "after_rollback")
    def _forget(session: Session) -> None:
        session.info.pop(_CHANGED_KEY, None)


def _touch(session: Session, task: Task) -> Task:
    session.info.setdefault(_CHANGED_KEY, {})[task.id] = task
    return task


def create(session: Session, kind: str, subject: str | None = None) -> Task:
    task = Task(id=str(uuid.uuid4()), kind=kind, subject=subject, status=TaskStatus.QUEUED, created_at=utcnow())
    session.add(task)
    return _touch(session, task)


def get(session: Session, task_id: str, *, for_update: bool = False) -> Task | None:
    """``for_update`` locks the row and reloads it: a row this session read before the lock may
    have changed since (a cancel committed), and deciding on that stale copy is the race the lock
    is there to prevent."""
    if for_update:
        return session.get(Task, task_id, with_for_update=True, populate_existing=True)
    return session.get(Task, task_id)


def mark_running(session: Session, task: Task) -> Task:
    if task.status in TERMINAL:
        raise TaskStateError(f"task {task.id} is already {task.status}")
    if task.status != TaskStatus.RUNNING:
        task.status = TaskStatus.RUNNING
        task.started_at = utcnow()
    return _touch(session, task)


def set_progress(session: Session, task: Task, progress: dict[str, Any]) -> Task:
    """Record ``progress``; its ``fraction`` never goes back and never reads 1.0 before the task
    succeeded. Reporters may go back (a run resumed from a checkpoint older than its last report,
    two runs' updates committing out of order), so the rule is kept here, where every update passes."""
    if task.status in TERMINAL:
        return task
    fraction = progress.get("fraction")
    if isinstance(fraction, int | float):
        fraction = min(float(fraction), RUNNING_CEILING)
        before = (task.progress or {}).get("fraction")
        if isinstance(before, int | float):
            fraction = max(fraction, min(float(before), RUNNING_CEILING))
        progress = {**progress, "fraction": fraction}
    task.status = TaskStatus.RUNNING
    task.progress = progress
    return _touch(session, task)


def succeed(session: Session, task: Task, result: dict[str, Any]) -> Task:
    if task.status in TERMINAL:
        raise TaskStateError(f"task {task.id} is already {task.status}")
    task.status = TaskStatus.SUCCEEDED
    task.result = result
    task.finished_at = utcnow()
    if task.progress:
        task.progress = {**task.progress, "fraction": 1.0}
    return _touch(session, task)


def error_document(exc: BaseException, *, code: str | None = None, retryable: bool = False) -> dict[str, Any]:
    """A structured, JSON-safe description of ``exc`` for the task row and the Celery channel."""
    celery_type = next(
        (c.__name__ for c in type(exc).__mro__ if getattr(builtins, c.__name__, None) is c), "Exception"
    )
    document = {
        "type": type(exc).__name__,
        "code": code or getattr(exc, "code", None) or "error",
        "message": str(exc),
        "retryable": retryable,
        "celery_type": celery_type,
        "traceback": "".join(tb.format_exception(exc))[-4000:],
    }
    # What a client needs to act on the failure (the candidates of an ambiguous state dict, a
    # limit and the value that broke it), when the error carries it and it is plain JSON.
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details:
        try:
            json.dumps(details, allow_nan=False)
        except (TypeError, ValueError):
            pass
        else:
            document["details"] = details
    return document


def fail(session: Session, task: Task, error: dict[str, Any]) -> Task:
    if task.status in TERMINAL:
        return task
    task.status = TaskStatus.FAILED
    task.error = error
    task.finished_at = utcnow()
    return _touch(session, task)


def cancel(session: Session, task: Task) -> Task:
    if task.status in TERMINAL:
        return task
    task.status = TaskStatus.CANCELLED
    task.finished_at = utcnow()
    return _touch(session, task)


def public_error(error: dict[str, Any]) -> dict[str, Any]:
    """What of an error document clients see: in the API, on events and on the rows they read."""
    return {k: error[k] for k in PUBLIC_ERROR_FIELDS if k in error}
