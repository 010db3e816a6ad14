"""Registering and reading Gymnasium environments."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from api.errors import Invalid, NotFound
from api.schemas import version_of
from api.services.catalog import require_known_env
from storage import outbox, tasks
from storage.events import EnvironmentRegistered
from storage.models import Environment


def _check_version(env_name: str, version: str | None) -> None:
    """The original API took the version beside the id; here it is only checked, never applied, so a
    request can never register an id other than the one it names."""
    if version is None:
        return
    stated = version.strip().lower()
    stated = stated if stated.startswith("v") else f"v{stated}"
    actual = version_of(env_name)
    if stated != actual:
        has = f"whose version is {actual}" if actual else "which has no version"
        raise Invalid(f"version {version!r} does not match env_name {env_name!r}, {has}", code="version_mismatch",
                      details=[{"field": "version", "message": f"{env_name} is version {actual}",
                                "type": "version_mismatch", "version": version, "env_name": env_name,
                                "env_version": actual}])


def register(session: Session, env_name: str, version: str | None = None) -> tuple[Environment, str | None]:
    """Register ``env_name`` and queue its verification; returns the row and the new task id.

    Registering an id that is already known and not rejected is a no-op that returns the existing
    row and no task, so scripts can register unconditionally. ``version``, if given, must be the
    id's own (see :func:`_check_version`).
    """
    env_name = require_known_env(env_name)
    _check_version(env_name, version)
    existing = by_name(session, env_name)
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
    return session.scalars(_BY_NAME, {"env_name": env_name}).first()


# Built once: every submission looks its environment up, and a statement built per call spent more
# CPU on its cache key than on the query.
_BY_NAME = select(Environment).where(Environment.env_name == bindparam("env_name")).limit(1)
