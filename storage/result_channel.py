"""The Celery-compatible result channel in Redis.

Celery's Redis result backend stores ``celery-task-meta-<id>`` as a JSON document and publishes the
same bytes on a channel of the same name; ``AsyncResult.get()`` subscribes to that channel and reads
the key. Writing exactly that lets any Celery client read our tasks without knowing about us.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from storage.events import rfc3339
from storage.models import Task

log = logging.getLogger(__name__)

KEY_PREFIX = "celery-task-meta-"

_CELERY_STATES = {
    "queued": "PENDING",
    "running": "STARTED",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "cancelled": "REVOKED",
}


def celery_document(task: Task) -> dict[str, Any]:
    """The document Celery's Redis backend would have written for ``task``'s current state."""
    state = _CELERY_STATES[task.status]
    result: Any = None
    traceback = None
    if task.status == "running" and task.progress:
        state = "PROGRESS"
        result = task.progress
    elif task.status == "succeeded":
        result = task.result
    elif task.status == "failed":
        error = task.error or {}
        result = {
            # Celery rebuilds the exception from module + type; a builtin type always resolves.
            "exc_type": error.get("celery_type", "RuntimeError"),
            "exc_message": [f"{error.get('type', 'Error')}: {error.get('message', '')}"],
            "exc_module": "builtins",
        }
        traceback = error.get("traceback")
    elif task.status == "cancelled":
        result = {
            "exc_type": "TaskRevokedError",
            "exc_message": ["cancelled"],
            "exc_module": "celery.exceptions",
        }
    done = task.finished_at if task.status in ("succeeded", "failed", "cancelled") else None
    return {
        "status": state,
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": rfc3339(done) if done else None,
        "task_id": task.id,
    }


class CeleryResultChannel:
    """Writes task states to Redis; a Redis outage is logged and reported, never raised."""

    def __init__(self, redis_url: str, ttl: int) -> None:
        self.redis_url = redis_url
        self.ttl = ttl
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        return self._client

    def write(self, task: Task) -> bool:
        key = KEY_PREFIX + task.id
        body = json.dumps(celery_document(task), separators=(",", ":"))
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(key, body, ex=self.ttl)
            pipe.publish(key, body)
            pipe.execute()
            return True
        except Exception as exc:  # noqa: BLE001 - Redis is an optional mirror of the database
            log.warning("result channel write failed for task %s: %s", task.id, exc)
            return False

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
