"""Writing events into the outbox, in the caller's transaction, waking relays after commit, and
giving committed events their place in the log.

A relay in the same process is woken by :class:`OutboxSignal` as soon as a transaction that wrote
events commits; relays in other processes are woken by PostgreSQL ``NOTIFY`` (delivered only on
commit, so never for a rolled-back event) and fall back to polling either way.

**The log's order.** ``record`` only inserts: the row's ``seq`` comes from a sequence at INSERT,
which on PostgreSQL is not the order in which rows become visible (seq 748 may commit while 747 is
still in flight), so a cursor over ``seq`` can pass an event for good. The log is therefore ordered
by ``position``, which :func:`sequence` assigns later, to rows that are already committed, one
sequencer at a time, in a transaction of its own: whoever reads position *p* already sees every
position below it, and nothing can later appear below a cursor. The relay runs it on every pass and
a reader of the log runs it before reading, so the log does not wait for a relay.
"""

from __future__ import annotations

import threading

from sqlalchemy import BigInteger, exists, func, insert, literal, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from storage.events import Envelope, Event
from storage.models import EventRecord

NOTIFY_CHANNEL = "resimhub_outbox"
_PENDING_KEY = "resimhub_outbox_pending"
#: PostgreSQL advisory lock (per database) held by the one sequencer at work; "RSHUBSEQ" in ASCII.
SEQUENCER_LOCK = 0x5253_4855_4253_4551
#: Rows given positions per pass (one UPDATE statement).
SEQUENCE_BATCH = 5000


class OutboxSignal:
    """A level-triggered wake-up shared by the sessions of one process and its relay."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        woke = self._event.wait(timeout)
        self._event.clear()
        return woke


def install_commit_hook(sessions: sessionmaker, signal: OutboxSignal) -> None:
    @sa_event.listens_for(sessions, "after_commit")
    def _wake_relay(session: Session) -> None:
        if session.info.pop(_PENDING_KEY, False):
            signal.notify()

    @sa_event.listens_for(sessions, "after_rollback")
    def _forget(session: Session) -> None:
        session.info.pop(_PENDING_KEY, None)


def record(session: Session, event: Event) -> Envelope:
    """Add ``event`` to the outbox as part of the session's current transaction.

    A Core INSERT executed now, not an ORM object left for the flush: the unit of work cost about
    twice the CPU of the statement itself on the submission path, and nothing ever reads an event
    row back as an object in the transaction that wrote it.
    """
    envelope = Envelope.wrap(event)
    session.execute(_INSERT, {"event_id": envelope.id, "type": envelope.type, "subject": envelope.subject,
                              "time": envelope.time, "data": envelope.data})
    # PostgreSQL relays in other processes are woken by a trigger on the events table (migration
    # 0003), which NOTIFYs only when the transaction commits.
    session.info[_PENDING_KEY] = True
    return envelope


_INSERT = insert(EventRecord.__table__)


def sequence(session: Session, limit: int = SEQUENCE_BATCH) -> int:
    """Give up to ``limit`` committed events without a position the next positions, in ``seq``
    order, and commit; returns how many. Call it on a session with no work of its own pending.

    Correct because the sequencers are serialised (PostgreSQL: an advisory lock held until commit;
    SQLite: the write lock every transaction takes at ``BEGIN``) and a row can only be given a
    position once it is visible, i.e. committed. Three round trips when there is work (lock, update,
    commit), one probe and no lock when there is none.
    """
    table = EventRecord.__table__
    waiting = exists().where(table.c.position.is_(None))
    if session.get_bind().dialect.name == "postgresql":
        key = literal(SEQUENCER_LOCK, BigInteger)
        probe = select(func.pg_advisory_xact_lock(key)).where(waiting)  # locks only if needed
    else:
        probe = select(literal(1)).where(waiting)
    if session.execute(probe).first() is None:
        return 0
    # One statement after the lock, so one snapshot that already sees the previous pass's commit:
    # the last position handed out and the rows that wait.
    top = select(func.coalesce(func.max(table.c.position), 0)).scalar_subquery()
    pending = (
        select(table.c.seq, (func.row_number().over(order_by=table.c.seq) + top).label("position"))
        .where(table.c.position.is_(None))
        .order_by(table.c.seq)
        .limit(limit)
        .subquery()
    )
    done = session.execute(
        update(table).where(table.c.seq == pending.c.seq).values(position=pending.c.position)
    ).rowcount
    session.commit()
    return done


def envelope_of(row: EventRecord) -> Envelope:
    return Envelope(id=row.event_id, type=row.type, subject=row.subject, time=row.time, data=row.data)
