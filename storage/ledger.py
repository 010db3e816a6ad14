"""The processed-event ledger that makes every consumer idempotent on the event id."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.orm import Session

from storage.models import ProcessedEvent, utcnow


def seen(session: Session, event_id: str, consumer: str) -> bool:
    return session.get(ProcessedEvent, (event_id, consumer)) is not None


def seen_on(conn: Connection, event_id: str, consumer: str) -> bool:
    return conn.execute(_SEEN, {"event_id": event_id, "consumer": consumer}).first() is not None


def mark(session: Session, event_id: str, consumer: str) -> None:
    """Record ``event_id`` as handled by ``consumer`` in the session's transaction.

    A concurrent duplicate delivery that got this far too fails on the primary key (on PostgreSQL it
    waits for the first to commit) and rolls its whole effect back. Inserted now rather than at the
    flush, so the handler's later statements run in a transaction that already holds the key.
    """
    session.execute(_MARK, {"event_id": event_id, "consumer": consumer, "processed_at": utcnow()})


# Built once, executed for every message: a Core statement, no ORM object to flush.
_TABLE = ProcessedEvent.__table__
_SEEN = select(_TABLE.c.event_id).where(_TABLE.c.event_id == bindparam("event_id"),
                                        _TABLE.c.consumer == bindparam("consumer"))
_MARK = insert(_TABLE)
