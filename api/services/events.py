"""Reading the event log with filters and a cursor.

The cursor is an event's log position (``seq`` in the answer), assigned after commit by
:func:`storage.outbox.sequence`, never the row's insertion number: a page never reaches past an
event that is not yet visible, so paging on from its last ``seq`` misses nothing and repeats nothing.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Invalid
from storage import outbox
from storage.events import CATALOGUE
from storage.models import EventRecord
from storage.outbox import envelope_of


def page(session: Session, *, type_: str | None = None, subject: str | None = None, after: int | None = None,
         limit: int = 100) -> dict:
    """Events in log order after the cursor ``after`` (a ``seq``); ``type`` may end in ``.*``."""
    query = (select(EventRecord).where(EventRecord.position.is_not(None))
             .order_by(EventRecord.position).limit(limit + 1))
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
        query = query.where(EventRecord.position > after)
    # Events committed before this request get their positions now rather than when a relay next
    # passes, so a client reads its own writes; one indexed probe when none are waiting.
    outbox.sequence(session)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    events = []
    for row in rows:
        doc = envelope_of(row).to_cloudevent()
        doc["seq"] = row.position
        events.append(doc)
    return {"events": events, "next_cursor": rows[-1].position if more else None}
