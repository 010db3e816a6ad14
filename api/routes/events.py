from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import SessionDep
from api.schemas import EventPage
from api.services import events

router = APIRouter(prefix="/api/events", tags=["events"])


@router.get("")
def list_events(session: SessionDep,
                type: str | None = Query(None, max_length=100, description="exact type or a prefix ending in .*"),
                subject: str | None = Query(None, max_length=200),
                after: int | None = Query(None, ge=0, description="cursor: the seq of the last event seen"),
                limit: int = Query(100, ge=1, le=1000)) -> EventPage:
    return events.page(session, type_=type, subject=subject, after=after, limit=limit)
