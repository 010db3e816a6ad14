"""FastAPI dependencies, as ``Annotated`` aliases routes can name in their signatures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from storage.context import Storage


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_session(storage: Annotated[Storage, Depends(get_storage)]) -> Iterator[Session]:
    with storage.db.session() as session:
        yield session


StorageDep = Annotated[Storage, Depends(get_storage)]
SessionDep = Annotated[Session, Depends(get_session)]
