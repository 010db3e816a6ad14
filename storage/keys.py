"""API keys: minted, looked up and revoked here, and nowhere else.

A key is ``rh_`` followed by 256 random bits. The table keeps its sha256, which is safe for a secret
with that much entropy (nobody can brute-force it back) and lets a lookup be one indexed equality;
the comparison after the lookup is constant-time anyway, so a timing difference never depends on
how much of a guessed hash matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import ApiKey, utcnow

TOKEN_PREFIX = "rh_"
#: Ordered weakest first; a key's scope grants its own rights and every weaker one's.
SCOPES = ("read", "write", "admin")
#: ``last_used_at`` is refreshed at most this often, so authenticating stays a read, not a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: what a request keeps after its key was checked (never the key itself)."""

    key_id: str
    name: str
    scope: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def grants(scope: str, needed: str) -> bool:
    return SCOPES.index(scope) >= SCOPES.index(needed)


def create(session: Session, name: str, scope: str) -> tuple[ApiKey, str]:
    """Add a key to the session's transaction; returns the row and the token, shown only now."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=secrets.token_hex(6), name=name, scope=scope, key_hash=hash_token(token),
                 prefix=token[: len(TOKEN_PREFIX) + 6], created_at=utcnow())
    session.add(key)
    return key, token


def list_all(session: Session, *, include_revoked: bool = True) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def get(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def revoke(session: Session, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def active_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0)


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of an active key, or None; commits a refreshed ``last_used_at`` when stale."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or not hmac.compare_digest(key.key_hash, digest) or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.commit()
    return Principal(key_id=key.id, name=key.name, scope=key.scope)
