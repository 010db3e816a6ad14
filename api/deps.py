"""FastAPI dependencies, as ``Annotated`` aliases routes can name in their signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from storage.context import Storage


async def get_storage(request: Request) -> Storage:
    """Async although it does no I/O: FastAPI runs a sync dependency in the thread pool, a hop that
    cost about a tenth of a request's CPU on ``POST /api/experiments``."""
    return request.app.state.storage


async def get_session(storage: Annotated[Storage, Depends(get_storage)]) -> AsyncIterator[Session]:
    """A session for one request.

    Declared async so FastAPI does not spend two thread-pool hops on it: creating a session does no
    I/O, and closing one after its route committed returns the connection to the pool without a
    round trip. The route itself (sync) runs in the thread pool and does the database work there.
    """
    session = storage.db.sessions()
    try:
        yield session
    finally:
        session.close()


StorageDep = Annotated[Storage, Depends(get_storage)]
SessionDep = Annotated[Session, Depends(get_session)]
