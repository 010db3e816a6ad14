"""Managing API keys, for the CLI (``resimhub keys …``) and the admin routes alike."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import Invalid, NotFound
from api.schemas import MAX_KEY_NAME
from storage import keys
from storage.models import ApiKey


def create(session: Session, name: str, scope: str) -> tuple[ApiKey, str]:
    """Create and commit a key; the token in the answer is the only copy there will ever be."""
    name = name.strip()
    if not name or len(name) > MAX_KEY_NAME:
        raise Invalid(f"a key needs a name of 1 to {MAX_KEY_NAME} characters", details={"field": "name"})
    if scope not in keys.SCOPES:
        raise Invalid(f"scope must be one of {', '.join(keys.SCOPES)}", details={"field": "scope"})
    key, token = keys.create(session, name, scope)
    session.commit()
    return key, token


def list_all(session: Session, *, include_revoked: bool = True) -> list[ApiKey]:
    return keys.list_all(session, include_revoked=include_revoked)


def revoke(session: Session, key_id: str) -> ApiKey:
    key = keys.get(session, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id!r}", details={"key_id": key_id})
    keys.revoke(session, key)
    session.commit()
    return key
