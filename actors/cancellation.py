"""Noticing a cancel from inside long work: the one poll of a task's state that training and
evaluation share.

``POST /api/tasks/{id}/cancel`` only marks the task in the database; whoever is working on it
asks here, cheaply: the state is read at most every :data:`CANCEL_POLL_S`, and a failed read
counts as "not cancelled", because a database blip must not end a training or an evaluation.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from storage import tasks
from storage.context import Storage
from storage.models import Task

#: How often a running task's state is read (a database round trip) to notice a cancel.
CANCEL_POLL_S = 0.5


class TaskCancelled:
    """``cancelled()``: true once the task is terminal (cancelled by a user), and from then on."""

    def __init__(self, storage: Storage, task_id: str | None) -> None:
        self.storage = storage
        self.task_id = task_id
        self.value = False
        self._next = 0.0

    def __call__(self) -> bool:
        if self.value or self.task_id is None:
            return self.value
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + CANCEL_POLL_S
        try:
            with self.storage.db.session() as session:
                status = session.scalar(select(Task.status).where(Task.id == self.task_id))
        except Exception:  # noqa: BLE001 - see the module docstring
            return False
        self.value = status in tasks.TERMINAL
        return self.value
