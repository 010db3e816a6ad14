"""Reading the event log with filters and a cursor."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Invalid
from storage.events import CATALOGUE
from storage.models import EventRecord
from storage.outbox import envelope_of


def page(session: Session, *, type_: str | None = None, subject: str | None = None, after: int | None = None,
         limit: int = 100) -> dict:
    """Events in commit order after the cursor ``after`` (a ``seq``); ``type`` may end in ``.*``."""
    query = select(EventRecord).order_by(EventRecord.seq).limit(limit + 1)
    if type_:
        if type_.endswith(".*"):
            prefix = type_[:-1]
            if not any(t.startswith(prefix) for t in CATALOGUE):
                raise Invalid(f"no event type matches {type_!r}", code="unknown_event_type",
                              details={"known": sorted(CATALOGUE)})
            query = query.where(EventRecord.type.startswith(prefix, autoescape=True))
        else:
            if type_ not in CATALOGUE:
                raise Invalid(f"unknown event type {type_!r}", code="unknown_event_type",
                              details={"known": sorted(CATALOGUE)})
            query = query.where(EventRecord.type == type_)
    if subject:
        query = query.where(EventRecord.subject == subject)
    if after is not None:
        query = query.where(EventRecord.seq > after)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    events = []
    for row in rows:
        doc = envelope_of(row).to_cloudevent()
        doc["seq"] = row.seq
        events.append(doc)
    return {"events": events, "next_cursor": rows[-1].seq if more else None}
