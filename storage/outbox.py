"""Writing events into the outbox, in the caller's transaction, and waking relays after commit.

A relay in the same process is woken by :class:`OutboxSignal` as soon as a transaction that wrote
events commits; relays in other processes are woken by PostgreSQL ``NOTIFY`` (delivered only on
commit, so never for a rolled-back event) and fall back to polling either way.
"""

from __future__ import annotations

import threading

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from storage.events import Envelope, Event
from storage.models import EventRecord

NOTIFY_CHANNEL = "resimhub_outbox"
_PENDING_KEY = "resimhub_outbox_pending"


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
    """Add ``event`` to the outbox as part of the session's current transaction."""
    envelope = Envelope.wrap(event)
    session.add(
        EventRecord(
            event_id=envelope.id,
            type=envelope.type,
            subject=envelope.subject,
            time=envelope.time,
            data=envelope.data,
        )
    )
    # PostgreSQL relays in other processes are woken by a trigger on the events table (migration
    # 0003), which NOTIFYs only when the transaction commits.
    session.info[_PENDING_KEY] = True
    return envelope


def envelope_of(row: EventRecord) -> Envelope:
    return Envelope(id=row.event_id, type=row.type, subject=row.subject, time=row.time, data=row.data)
