"""The processed-event ledger that makes every consumer idempotent on the event id."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from storage.models import ProcessedEvent


def seen(session: Session, event_id: str, consumer: str) -> bool:
    return session.get(ProcessedEvent, (event_id, consumer)) is not None


def seen_on(conn: Connection, event_id: str, consumer: str) -> bool:
    query = select(ProcessedEvent.event_id).where(ProcessedEvent.event_id == event_id,
                                                  ProcessedEvent.consumer == consumer)
    return conn.execute(query).first() is not None


def mark(session: Session, event_id: str, consumer: str) -> None:
    """Record ``event_id`` as handled by ``consumer`` in the session's transaction.

    A concurrent duplicate delivery that got this far too fails on the primary key at commit and
    rolls its whole effect back.
    """
    session.add(ProcessedEvent(event_id=event_id, consumer=consumer))
