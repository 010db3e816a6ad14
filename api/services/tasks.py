"""Reading tasks, optionally waiting for them to finish."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from api.errors import NotFound
from api.schemas import TaskPublic
from storage import tasks
from storage.models import Task

MAX_WAIT_S = 60.0


def get(session: Session, task_id: str) -> Task:
    task = tasks.get(session, task_id)
    if task is None:
        raise NotFound(f"task {task_id} does not exist", details={"task_id": task_id})
    return task


def _look(open_session: Callable[[], Session], task_id: str) -> tuple[TaskPublic, bool]:
    with open_session() as session:
        task = get(session, task_id)
        return TaskPublic.model_validate(task), task.status in tasks.TERMINAL


async def wait_for_async(open_session: Callable[[], Session], task_id: str, wait_s: float) -> TaskPublic:
    """:func:`wait_for` for async routes: sleeps on the event loop, so a client waiting a minute
    holds no thread; only each short look at the database runs in the thread pool."""
    from anyio import sleep
    from starlette.concurrency import run_in_threadpool

    deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
    delay = 0.02
    while True:
        view, finished = await run_in_threadpool(_look, open_session, task_id)
        if finished or time.monotonic() >= deadline:
            return view
        await sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


def wait_for(open_session: Callable[[], Session], task_id: str, wait_s: float) -> TaskPublic:
    """The task's public view once it is terminal or ``wait_s`` (capped) has passed.

    Each look uses a fresh short session so that waiting never holds a database transaction open.
    """
    deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
    delay = 0.02
    while True:
        view, finished = _look(open_session, task_id)
        if finished or time.monotonic() >= deadline:
            return view
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)
