"""API keys over HTTP, for deployments where running ``resimhub keys`` in a container is awkward.
Admin scope only (see :mod:`api.auth`)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import SessionDep
from api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from api.services import keys

router = APIRouter(prefix="/api/keys", tags=["keys"])


@router.post("", status_code=201)
def create_key(body: ApiKeyCreate, session: SessionDep) -> ApiKeyCreated:
    """Mint a key. Its secret is in this answer and nowhere else: store it now."""
    key, token = keys.create(session, body.name, body.scope)
    return ApiKeyCreated(**ApiKeyPublic.model_validate(key).model_dump(), key=token)


@router.get("")
def list_keys(session: SessionDep, include_revoked: bool = Query(True)) -> list[ApiKeyPublic]:
    return [ApiKeyPublic.model_validate(k) for k in keys.list_all(session, include_revoked=include_revoked)]


@router.delete("/{key_id}")
def revoke_key(key_id: str, session: SessionDep) -> ApiKeyPublic:
    """Revoke a key at once; requests with it are refused from now on."""
    return ApiKeyPublic.model_validate(keys.revoke(session, key_id))
