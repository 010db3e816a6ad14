"""API keys over HTTP, for deployments where running ``resimhub keys`` in a container is awkward.
Admin scope only (see :mod:`api.auth`)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import SessionDep
from api.schemas import Strict
from api.services import keys

router = APIRouter(prefix="/api/keys", tags=["keys"])


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=keys.MAX_NAME, description="what the key is for, e.g. ci")
    scope: Literal["read", "write", "admin"] = Field(description="read ⊂ write ⊂ admin")


class ApiKeyPublic(BaseModel):
    id: str
    name: str
    scope: str
    prefix: str
    active: bool
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the secret; shown only in this answer")


@router.post("", status_code=201)
def create_key(body: ApiKeyCreate, session: SessionDep) -> ApiKeyCreated:
    """Mint a key. Its secret is in this answer and nowhere else: store it now."""
    key, token = keys.create(session, body.name, body.scope)
    return ApiKeyCreated(**keys.to_public(key), key=token)


@router.get("")
def list_keys(session: SessionDep, include_revoked: bool = Query(True)) -> list[ApiKeyPublic]:
    return [ApiKeyPublic(**keys.to_public(k)) for k in keys.list_all(session, include_revoked=include_revoked)]


@router.delete("/{key_id}")
def revoke_key(key_id: str, session: SessionDep) -> ApiKeyPublic:
    """Revoke a key at once; requests with it are refused from now on."""
    return ApiKeyPublic(**keys.to_public(keys.revoke(session, key_id)))
