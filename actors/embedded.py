"""What the embedded deployment (``resimhub up`` without ``RESIMHUB_BROKER_URL``) needs to survive a
``kill -9``: its broker is a queue in this process's memory, so a crash loses every message in it.

RabbitMQ keeps a message until the worker acknowledges it after the actor returned; the embedded
hub gets the same guarantee from the outbox. With an in-process broker the relay leaves an event's
row *unpublished* when it hands the event's messages to the broker, and marks it published only
once every consumer has finished with them (:class:`HandledTracker`, a Dramatiq middleware that
watches the worker). After a crash, every event whose consumers had not finished is therefore still
unpublished, and the relay of the restarted hub sends it again; the consumers are idempotent on the
event id (the ``processed_events`` ledger), and ``train`` resumes a run from its checkpoint.

What is not an outbox event is recovered at start-up by :func:`recover`, before the worker starts:

* webhook attempts: a delivery left ``sending`` lost its attempt (recorded as interrupted and
  retried, as the sweep does), and a ``pending`` one lost its (delayed) message, which is sent again;
* events published by an earlier version (which marked rows published on enqueue) whose consumer
  never recorded handling them while their task is still queued or running: they are reopened;
* temporary files an interrupted write left in the artifact store (``.incoming-*`` uploads,
  ``.tmp-*`` checkpoints and policies).

All of this assumes that no other process works on the same data: :func:`hold_data_dir` makes a
second ``resimhub up`` with an in-process broker on the same data directory refuse to start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import dramatiq
import dramatiq.errors
from sqlalchemy import func, select, update

from actors.bus import GIVE_UP_ACTOR
from storage.artifacts import TEMP_FILE_GRACE_S, remove_temporaries
from storage.models import EventRecord, ProcessedEvent, Task

if TYPE_CHECKING:
    from storage.context import Storage

log = logging.getLogger(__name__)

LOCK_NAME = "embedded.lock"


# -- acknowledgements ------------------------------------------------------------------------------
class HandledTracker(dramatiq.Middleware):
    """Which events handed to the in-process broker still have consumers to run.

    The relay calls :meth:`expect` with an event's message ids before it enqueues them; this
    middleware sees each message finish for good in the worker. A message is finished when its actor
    returned, when it was skipped, or when it was given up on: then ``record_give_up`` (the actors'
    ``on_retry_exhausted``) has recorded the failure, or the message failed with nowhere to go. A
    message that failed and will be retried is not finished: the retry carries the same message id.
    Once every message of an event is finished the event is *settled*; :meth:`take_settled` hands
    those to the relay, which marks them published.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event_of: dict[str, int] = {}  # message id -> event seq
        self._left: dict[int, int] = {}  # event seq -> messages still to finish
        self._settled: list[int] = []

    @classmethod
    def install(cls, broker: dramatiq.Broker) -> HandledTracker:
        """The tracker of ``broker``, added on first use (one per broker)."""
        for middleware in broker.middleware:
            if isinstance(middleware, cls):
                return middleware
        tracker = cls()
        broker.add_middleware(tracker)
        return tracker

    # -- the relay's side
    def expect(self, seq: int, message_ids: Iterable[str]) -> None:
        ids = set(message_ids)
        with self._lock:
            if not ids:
                self._settled.append(seq)
                return
            self._left[seq] = len(ids)
            for message_id in ids:
                self._event_of[message_id] = seq

    def forget(self, seqs: Iterable[int]) -> None:
        """The enqueue of these events failed; they stay unpublished for the next pass."""
        wanted = set(seqs)
        with self._lock:
            for message_id in [m for m, s in self._event_of.items() if s in wanted]:
                del self._event_of[message_id]
            for seq in wanted:
                self._left.pop(seq, None)
            self._settled = [s for s in self._settled if s not in wanted]

    def take_settled(self) -> list[int]:
        with self._lock:
            settled, self._settled = self._settled, []
        return settled

    def put_back(self, seqs: Iterable[int]) -> None:
        """Marking these published failed (the database was away); try again on the next pass."""
        with self._lock:
            self._settled.extend(seqs)

    @property
    def in_flight(self) -> int:
        """Events handed to the broker whose consumers have not all finished."""
        with self._lock:
            return len(self._left)

    def finished(self, message_id: str | None) -> None:
        if message_id is None:
            return
        with self._lock:
            seq = self._event_of.pop(message_id, None)
            if seq is None:
                return  # not an outbox message (e.g. a webhook attempt), or already finished
            self._left[seq] -= 1
            if self._left[seq] == 0:
                del self._left[seq]
                self._settled.append(seq)

    # -- the worker's side (Dramatiq middleware hooks)
    @staticmethod
    def _given_up_on(message) -> str | None:
        original = message.args[0] if message.args else None
        return original.get("message_id") if isinstance(original, dict) else None

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if exception is not None:
            return  # retried (same message id) or given up on: see after_nack
        if message.actor_name == GIVE_UP_ACTOR:
            self.finished(self._given_up_on(message))
        else:
            self.finished(message.message_id)

    def after_skip_message(self, broker, message) -> None:
        self.finished(message.message_id)

    def after_nack(self, broker, message) -> None:
        if message.actor_name == GIVE_UP_ACTOR:
            self.finished(self._given_up_on(message))  # even recording the failure failed: nothing left to do
            return
        try:
            options = broker.get_actor(message.actor_name).options
        except dramatiq.errors.ActorNotFound:
            options = {}
        if not (message.options.get("on_retry_exhausted") or options.get("on_retry_exhausted")):
            self.finished(message.message_id)
        # else the Retries middleware sent the message to record_give_up, which finishes it


# -- one hub per data directory ----------------------------------------------------------------------
class DataDirInUse(Exception):
    """Another ``resimhub up`` with an in-process broker holds the data directory."""


def hold_data_dir(data_dir: Path) -> int:
    """Take ``<data_dir>/embedded.lock`` for the life of the process (the kernel releases it when the
    process ends, however it ends) and return its descriptor; raise :class:`DataDirInUse` if held."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DataDirInUse(f"another `resimhub up` (pid {holder}) is running on {data_dir}; the embedded hub "
                           "keeps its queue in memory, so only one process may work on a data directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# -- start-up recovery -------------------------------------------------------------------------------
def reopen_lost_work(storage: Storage, routes: dict[str, list[str]] | None = None) -> int:
    """Mark unpublished again the published events whose consumer never recorded handling them while
    their task is still queued or running, so the relay sends them again; returns how many.

    Only rows published by a version that marked them on enqueue can be found here (since then a row
    is published once its consumers are done), e.g. the training that stayed ``running`` for ever.
    Nothing else is in flight when the embedded hub starts, so such a task can only move again if its
    event is sent again. A consumer that finds nothing to do records nothing, so a re-sent event can
    come back here on a later start; sending it again is cheap and harmless.
    """
    if routes is None:
        from actors.consumers import ROUTES as routes  # noqa: N811 - the routing table imports every actor
    consumers = {kind: names for kind, names in routes.items() if kind != "*" and names}
    if not consumers:
        return 0
    task_id = EventRecord.data["task_id"].as_string()
    with storage.db.session() as session:
        if not session.scalar(select(func.count()).select_from(Task).where(Task.status.in_(("queued", "running")))):
            return 0
        rows = session.execute(
            select(EventRecord.seq, EventRecord.event_id, EventRecord.type)
            .join(Task, Task.id == task_id)
            .where(EventRecord.published_at.is_not(None), EventRecord.type.in_(list(consumers)),
                   Task.status.in_(("queued", "running")))
        ).all()
        handled: set[tuple[str, str]] = set()
        ids = [r.event_id for r in rows]
        for start in range(0, len(ids), 500):
            handled.update((e, c) for e, c in session.execute(
                select(ProcessedEvent.event_id, ProcessedEvent.consumer)
                .where(ProcessedEvent.event_id.in_(ids[start:start + 500]))))
        lost = [r.seq for r in rows if any((r.event_id, c) not in handled for c in consumers[r.type])]
        for start in range(0, len(lost), 500):
            session.execute(update(EventRecord).where(EventRecord.seq.in_(lost[start:start + 500]))
                            .values(published_at=None))
        session.commit()
    return len(lost)


def unsettled_events(storage: Storage) -> int:
    with storage.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(EventRecord)
                                  .where(EventRecord.published_at.is_(None))) or 0)


def recover(storage: Storage, actors: dict[str, dramatiq.Actor]) -> dict[str, int]:
    """Everything a restarted embedded hub does before its worker starts; returns what it found."""
    from actors import webhooks

    settings = storage.settings
    # Only this process writes artifacts (it holds the data directory), so every temporary file there
    # is left over. A snapshot rebuild (`resimhub analytics snapshot`) may be writing beside us: only
    # temporaries older than the grace period go there.
    found = {
        "temporary_files": remove_temporaries(settings.artifacts_dir, older_than_s=0.0)
        + remove_temporaries(settings.snapshots_dir, older_than_s=TEMP_FILE_GRACE_S),
        "reopened_events": reopen_lost_work(storage),
        "webhook_deliveries": webhooks.recover(storage, actors),
    }
    found["unsettled_events"] = unsettled_events(storage)
    if any(found.values()):
        log.info("embedded restart: re-sending %d unsettled events (%d reopened), resuming %d webhook deliveries, "
                 "removed %d temporary files", found["unsettled_events"], found["reopened_events"],
                 found["webhook_deliveries"], found["temporary_files"])
    return found
