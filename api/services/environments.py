"""Registering and reading Gymnasium environments."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import NotFound
from api.services.catalog import require_known_env
from storage import outbox, tasks
from storage.events import EnvironmentRegistered, rfc3339
from storage.models import Environment


def to_public(env: Environment) -> dict:
    return {
        "id": env.id,
        "env_name": env.env_name,
        "status": env.status,
        "spec": env.spec,
        "reason": env.reason,
        "task_id": env.task_id,
        "created_at": rfc3339(env.created_at),
        "verified_at": rfc3339(env.verified_at) if env.verified_at else None,
    }


def register(session: Session, env_name: str) -> tuple[Environment, str | None]:
    """Register ``env_name`` and queue its verification; returns the row and the new task id.

    Registering an id that is already known and not rejected is a no-op that returns the existing
    row and no task, so scripts can register unconditionally.
    """
    env_name = require_known_env(env_name)
    existing = session.scalars(select(Environment).where(Environment.env_name == env_name)).first()
    if existing is not None and existing.status != "rejected":
        return existing, None
    environment = existing or Environment(env_name=env_name)
    environment.status, environment.spec, environment.reason = "pending", None, None
    session.add(environment)
    session.flush()
    task = tasks.create(session, "verify_environment", subject=f"environments/{environment.id}")
    environment.task_id = task.id
    outbox.record(session, EnvironmentRegistered(environment.id, env_name, task.id))
    session.commit()
    return environment, task.id


def get(session: Session, environment_id: int) -> Environment:
    env = session.get(Environment, environment_id)
    if env is None:
        raise NotFound(f"environment {environment_id} does not exist", details={"environment_id": environment_id})
    return env


def list_all(session: Session, *, limit: int = 100, offset: int = 0) -> list[Environment]:
    return list(session.scalars(select(Environment).order_by(Environment.id).limit(limit).offset(offset)))


def by_name(session: Session, env_name: str) -> Environment | None:
    return session.scalars(select(Environment).where(Environment.env_name == env_name)).first()
