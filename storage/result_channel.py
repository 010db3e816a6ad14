"""The Celery-compatible result channel in Redis.

Celery's Redis result backend stores ``celery-task-meta-<id>`` as a JSON document and publishes the
same bytes on a channel of the same name; ``AsyncResult.get()`` subscribes to that channel and reads
the key. Writing exactly that lets any Celery client read our tasks without knowing about us.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from storage.events import rfc3339
from storage.models import Task
from storage.tasks import TERMINAL, TaskStatus

log = logging.getLogger(__name__)

KEY_PREFIX = "celery-task-meta-"
#: Task ids remembered per process while Redis is away; past this the oldest are dropped (and logged):
#: the database still has them, only their Celery mirror stays stale until the task changes again.
MAX_MISSED = 100_000
_CATCH_UP_CHUNK = 500


class CeleryState(StrEnum):
    """Celery's names for task states: a contract with every Celery client, not ours to change."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    #: A custom state (Celery allows them): running, with ``result`` holding the progress.
    PROGRESS = "PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"


#: The one translation between our task states and Celery's; a running task that reported
#: progress shows as ``PROGRESS`` instead (:func:`celery_document`).
CELERY_STATES: Mapping[TaskStatus, CeleryState] = MappingProxyType({
    TaskStatus.QUEUED: CeleryState.PENDING,
    TaskStatus.RUNNING: CeleryState.STARTED,
    TaskStatus.SUCCEEDED: CeleryState.SUCCESS,
    TaskStatus.FAILED: CeleryState.FAILURE,
    TaskStatus.CANCELLED: CeleryState.REVOKED,
})
#: Celery's final states: those of our terminal ones.
FINAL_STATES = frozenset(CELERY_STATES[status] for status in TERMINAL)

# A catch-up write must never take a key back from a final state: while this process was reading
# the row, another may already have written a newer one. Terminal documents are always written
# (they cannot be superseded); others only over a missing or non-terminal value.
_CATCH_UP_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur and ARGV[3] == '0' then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and type(doc) == 'table' then
    local s = doc['status']
    if FINAL then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
""".replace("FINAL", " or ".join(f"s == '{state}'" for state in sorted(FINAL_STATES)))


def celery_document(task: Task) -> dict[str, Any]:
    """The document Celery's Redis backend would have written for ``task``'s current state."""
    status = TaskStatus(task.status)
    state = CELERY_STATES[status]
    result: Any = None
    traceback = None
    if status is TaskStatus.RUNNING and task.progress:
        state = CeleryState.PROGRESS
        result = task.progress
    elif status is TaskStatus.SUCCEEDED:
        result = task.result
    elif status is TaskStatus.FAILED:
        error = task.error or {}
        result = {
            # Celery rebuilds the exception from module + type; a builtin type always resolves.
            "exc_type": error.get("celery_type", "RuntimeError"),
            "exc_message": [f"{error.get('type', 'Error')}: {error.get('message', '')}"],
            "exc_module": "builtins",
        }
        traceback = error.get("traceback")
    elif status is TaskStatus.CANCELLED:
        result = {
            "exc_type": "TaskRevokedError",
            "exc_message": ["cancelled"],
            "exc_module": "celery.exceptions",
        }
    done = task.finished_at if status in TERMINAL else None
    return {
        "status": str(state),
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": rfc3339(done) if done else None,
        "task_id": task.id,
    }


class CeleryResultChannel:
    """Writes task states to Redis; a Redis outage is logged and reported, never raised.

    Writes that fail are not forgotten: the task ids are remembered and a background thread
    rewrites them from the database (through ``reload``, installed by :mod:`storage.tasks`) once
    Redis answers again. Without that, a task that finished during an outage would stay
    ``PENDING``/``STARTED`` in Redis until its TTL, and a Celery client would wait forever.
    """

    def __init__(self, redis_url: str, ttl: int, *, retry_interval: float = 1.0,
                 max_retry_interval: float = 5.0) -> None:
        self.redis_url = redis_url
        self.ttl = ttl
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        self.reload: Callable[[list[str]], Iterable[Task]] | None = None
        self._client = None
        self._missed: dict[str, int] = {}  # task id -> sequence number of its latest failed write
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: Set to make the catch-up thread try now: on stop, and when Redis answered this process again.
        self._wake = threading.Event()
        self._catcher: threading.Thread | None = None

    @property
    def client(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        return self._client

    @property
    def missed(self) -> int:
        """How many tasks this process still has to rewrite once Redis is back."""
        with self._lock:
            return len(self._missed)

    def write(self, task: Task) -> bool:
        key = KEY_PREFIX + task.id
        body = json.dumps(celery_document(task), separators=(",", ":"))
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(key, body, ex=self.ttl)
            pipe.publish(key, body)
            pipe.execute()
            self._redis_answered()
            return True
        except Exception as exc:  # noqa: BLE001 - Redis is an optional mirror of the database
            log.warning("result channel write failed for task %s: %s", task.id, exc)
            self._remember(task.id)
            return False

    def _remember(self, task_id: str) -> None:
        with self._lock:
            self._seq += 1
            self._missed.pop(task_id, None)
            self._missed[task_id] = self._seq
            while len(self._missed) > MAX_MISSED:
                dropped = next(iter(self._missed))
                del self._missed[dropped]
                log.warning("result channel: too many missed writes; task %s stays stale in Redis", dropped)
            if self.reload is None or self._stop.is_set():
                return
            if self._catcher is None or not self._catcher.is_alive():
                self._catcher = threading.Thread(target=self._catch_up_loop, name="result-channel-catch-up",
                                                 daemon=True)
                self._catcher.start()

    def catch_up(self) -> int:
        """Rewrite every remembered task from its current database row; returns how many were written.

        Raises when Redis or the database is still unreachable; the ids stay remembered then.
        """
        if self.reload is None:
            return 0
        with self._lock:
            pending = dict(self._missed)
        if not pending:
            return 0
        self.client.ping()
        items = list(pending.items())
        written = 0
        for start in range(0, len(items), _CATCH_UP_CHUNK):
            chunk = items[start:start + _CATCH_UP_CHUNK]
            rows = {task.id: task for task in self.reload([task_id for task_id, _ in chunk])}
            for task_id, seq in chunk:
                task = rows.get(task_id)
                if task is not None:
                    doc = celery_document(task)
                    body = json.dumps(doc, separators=(",", ":"))
                    final = "1" if doc["status"] in FINAL_STATES else "0"
                    self.client.eval(_CATCH_UP_SCRIPT, 1, KEY_PREFIX + task_id, body, self.ttl, final)
                    written += 1
                with self._lock:
                    # A write that failed again after the row was read may carry a newer state: keep it.
                    if self._missed.get(task_id) == seq:
                        del self._missed[task_id]
        log.info("result channel caught up on %d task(s)", written)
        return written

    def _redis_answered(self) -> None:
        """Redis is back: a catch-up waiting out its backoff goes now instead of up to
        ``max_retry_interval`` later."""
        if self._missed:
            self._wake.set()

    def _catch_up_loop(self) -> None:
        delay = self.retry_interval
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.catch_up()
            except Exception as exc:  # noqa: BLE001 - keep trying until Redis and the database answer
                log.debug("result channel catch-up deferred: %s", exc)
                delay = min(delay * 2, self.max_retry_interval)
                continue
            with self._lock:
                if not self._missed:
                    self._catcher = None
                    return
            delay = self.retry_interval

    def ping(self) -> None:
        self.client.ping()
        self._redis_answered()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._client is not None:
            self._client.close()
            self._client = None
