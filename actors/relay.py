"""The outbox relay: moves committed events from the database onto the bus, at least once.

Each pass first gives newly committed events their log positions (:func:`storage.outbox.sequence`,
a short transaction that never waits for the broker), then claims a batch of positioned, unpublished
rows in log order (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several relays share the work without
publishing a row twice; SQLite has a single writer anyway), enqueues a message per consumer from the
routing table, and marks the rows published in the same transaction. If the broker is down that
transaction rolls back and the rows wait for the next pass; the log itself keeps growing. Only
positioned rows are claimed, so a relay holding rows during a slow publish never blocks a sequencer.

With a broker that keeps messages only in this process's memory (the embedded hub's ``StubBroker``)
a row is not marked when its messages are enqueued but once its consumers have finished with them
(:class:`actors.embedded.HandledTracker`), so the events a crash interrupted are sent again by the
restarted hub's relay.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select, update

from actors.bus import BatchPublisher
from actors.consumers import PERIODIC, ROUTES, Periodic
from actors.embedded import HandledTracker
from storage import outbox
from storage.context import Storage
from storage.models import EventRecord, utcnow
from storage.outbox import NOTIFY_CHANNEL, envelope_of

log = logging.getLogger(__name__)

_EVENTS = EventRecord.__table__
_COLUMNS = (_EVENTS.c.seq, _EVENTS.c.position, _EVENTS.c.event_id, _EVENTS.c.type, _EVENTS.c.subject,
            _EVENTS.c.time, _EVENTS.c.data)


def message_id(event_id: str, actor_name: str) -> str:
    """Stable per (event, consumer), so a republished event is recognisable in broker tooling."""
    return str(uuid.uuid5(uuid.UUID(event_id), actor_name))


class Relay:
    def __init__(self, storage: Storage, broker: dramatiq.Broker, actors: dict[str, dramatiq.Actor],
                 *, routes: dict[str, list[str]] | None = None, periodic: list[Periodic] | None = None) -> None:
        self.storage = storage
        self.broker = broker
        self.actors = actors
        self.routes = ROUTES if routes is None else routes
        self.batch_size = storage.settings.relay_batch_size
        self.poll_interval = storage.settings.relay_poll_interval
        self.published = 0
        self.publisher = BatchPublisher(broker)
        self._stop = threading.Event()
        self.periodic = PERIODIC if periodic is None else periodic
        self._due: dict[str, float] = {}
        #: Set when the broker lives in this process's memory: rows stay unpublished until handled.
        self.tracker = HandledTracker.install(broker) if isinstance(broker, StubBroker) else None
        #: The log position up to which rows were handed to that broker (positions only grow).
        self._handed_up_to = 0

    def publish_batch(self) -> int:
        """One pass; returns the number of events published (handed to an in-process broker)."""
        db = self.storage.db
        if self.tracker is not None:
            self.settle()
        with db.session() as session:
            outbox.sequence(session)
        with db.session() as session:
            # Core rows, not ORM objects: a pass loads and marks hundreds of rows it never changes
            # as objects, and the ORM's loading and bulk-update bookkeeping cost more than the SQL.
            query = (
                select(*_COLUMNS)
                .where(_EVENTS.c.published_at.is_(None), _EVENTS.c.position.is_not(None))
                .order_by(_EVENTS.c.position)
                .limit(self.batch_size)
            )
            if self.tracker is not None:
                query = query.where(_EVENTS.c.position > self._handed_up_to)
            if db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = session.execute(query).all()
            if not rows:
                session.rollback()
                return 0
            messages = []
            for row in rows:
                doc = envelope_of(row).to_cloudevent()
                mine = []
                for actor_name in (*self.routes.get(row.type, ()), *self.routes.get("*", ())):
                    actor = self.actors[actor_name]
                    mine.append(actor.message(doc).copy(message_id=message_id(row.event_id, actor_name)))
                if self.tracker is not None:
                    self.tracker.expect(row.seq, (m.message_id for m in mine))  # before a worker can finish one
                messages += mine
            if self.tracker is not None:  # marked by settle() once handled, not now
                try:
                    self.publisher.publish(messages)
                except BaseException:
                    self.tracker.forget(r.seq for r in rows)
                    raise
                self._handed_up_to = rows[-1].position
            else:
                self.publisher.publish(messages)
                session.execute(
                    update(_EVENTS).where(_EVENTS.c.seq.in_([r.seq for r in rows])).values(published_at=utcnow())
                )
            session.commit()
        self.published += len(rows)
        return len(rows)

    def settle(self) -> int:
        """Mark published the events whose consumers have all finished (in-process broker only)."""
        if self.tracker is None:
            return 0
        seqs = self.tracker.take_settled()
        if not seqs:
            return 0
        try:
            with self.storage.db.session() as session:
                for start in range(0, len(seqs), 500):
                    session.execute(update(_EVENTS).where(_EVENTS.c.seq.in_(seqs[start:start + 500]))
                                    .values(published_at=utcnow()))
                session.commit()
        except BaseException:
            self.tracker.put_back(seqs)
            raise
        return len(seqs)

    def drain(self) -> int:
        total = 0
        while (n := self.publish_batch()) > 0:
            total += n
        return total

    def run_periodic(self) -> None:
        """The routing table's housekeeping jobs (e.g. the webhook sweep), each at most every ``every_s``."""
        now = time.monotonic()
        for job in self.periodic:
            if now < self._due.get(job.name, 0.0):
                continue
            self._due[job.name] = now + job.every_s
            try:
                job.fn(self.storage, self.actors)
            except Exception as exc:  # noqa: BLE001 - housekeeping must not stop publishing
                log.warning("%s failed: %s", job.name, exc)

    def stop(self) -> None:
        self._stop.set()
        self.storage.outbox_signal.notify()

    def run(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Publish until :meth:`stop`: woken by commits in this process, by PostgreSQL NOTIFY from
        other processes, and otherwise every ``poll_interval`` seconds."""
        listener = _PgListener(self.storage) if self.storage.db.dialect == "postgresql" else None
        backoff = self.poll_interval
        try:
            while not self._stop.is_set():
                try:
                    n = self.publish_batch()
                    backoff = self.poll_interval
                except Exception as exc:  # noqa: BLE001 - broker/DB outages must not kill the relay
                    log.warning("relay pass failed, retrying in %.1fs: %s", backoff, exc)
                    if on_error:
                        on_error(exc)
                    self._reset_broker()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                self.run_periodic()
                if n >= self.batch_size:
                    continue
                if listener is not None:
                    listener.wait(self.poll_interval, self.storage.outbox_signal)
                else:
                    self.storage.outbox_signal.wait(self.poll_interval)
        finally:
            if listener is not None:
                listener.close()

    def _reset_broker(self) -> None:
        self.publisher.close()
        # pika's thread-local connection is unusable after a broker outage; drop it so the next
        # enqueue reconnects.
        try:
            del self.broker.connection
        except Exception:  # noqa: BLE001 - the stub broker has no connection; a dead one may not close
            pass


class _PgListener:
    """LISTEN on the outbox channel; wakes on NOTIFY from any process's commit or on the local signal."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.conn = None

    def _connect(self):
        if self.conn is None:
            raw = self.storage.db.engine.raw_connection()
            self.conn = raw
            dbapi = raw.driver_connection
            dbapi.autocommit = True
            with dbapi.cursor() as cur:
                cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self.conn.driver_connection

    def wait(self, timeout: float, signal) -> None:
        import select as _select

        try:
            dbapi = self._connect()
        except Exception:  # noqa: BLE001 - fall back to the local signal while the DB is away
            signal.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        # Poll the socket in short slices so a local commit (signal) also wakes us promptly.
        while time.monotonic() < deadline:
            if signal.wait(0):
                return
            ready, _, _ = _select.select([dbapi], [], [], min(0.02, max(0.0, deadline - time.monotonic())))
            if ready:
                try:
                    dbapi.poll()
                except Exception:  # noqa: BLE001
                    self.close()
                    return
                if dbapi.notifies:
                    dbapi.notifies.clear()
                    return

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None
