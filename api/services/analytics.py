"""The analytics API's service layer: parameter checks, then a call into :mod:`analytics`.

Answers come from the Parquet snapshot folder only; no query touches the database, so analytics
load never competes with the pipeline's transactions. The reads run on the process's few analytics
reader threads (``RESIMHUB_ANALYTICS_READERS``, :func:`analytics.engine.run`); DuckDB scans the
files on its own threads within ``RESIMHUB_ANALYTICS_MEMORY_MB`` (analytics/engine.py).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

from analytics import engine, readers, reports
from analytics.errors import NotEnoughData, SnapshotUnreadable
from api.errors import ApiError, Invalid, NotFound
from api.services.catalog import require_known_agent
from storage.context import Storage

MAX_LIMIT = 1000
MAX_RESAMPLES = 10_000
_READS = {"recent": reports.recent, "experiment": reports.experiment, "leaderboards": reports.leaderboards,
          "compare": reports.compare_agents, "datasets": readers.dataset_summary}


class SnapshotsUnreadable(ApiError):
    """The snapshot folder holds what the reports cannot read: an operator's problem, not the
    client's, and never to be answered as an empty table."""

    status, code = 500, "snapshots_unreadable"


def _read(storage: Storage, name: str, **given):
    """Run the report ``name`` on the snapshot folder; arguments left at None take its own default."""
    kwargs = {k: v for k, v in given.items() if v is not None}
    folder = _dir(storage)
    try:
        # The same read of an unchanged folder answers the same: computed once, kept (engine.answer).
        arguments = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
        key = (name, str(folder), arguments, readers.folder_state(folder))
        return copy.deepcopy(engine.answer(key, lambda: engine.run(_READS[name], folder, **kwargs)))
    except SnapshotUnreadable as exc:
        raise SnapshotsUnreadable(str(exc), details={"path": exc.path}) from None


def _dir(storage: Storage) -> Path:
    return storage.settings.snapshots_dir


def agent_name(raw: str | None) -> str | None:
    return require_known_agent(raw) if raw else None


def parse_since(raw: str | None) -> datetime | None:
    """``since`` as an aware UTC time; a date alone means its midnight UTC."""
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"since={raw!r} is not an ISO 8601 date or time",
                      details=[{"field": "since", "message": "expected e.g. 2026-01-31 or 2026-01-31T12:00:00Z",
                                "type": "datetime_parsing"}]) from None
    return utc(moment)


def utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_limit(raw: str | None, default: int = 20) -> int:
    try:
        value = int(raw) if raw not in (None, "") else default
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise Invalid(f"limit must be an integer from 1 to {MAX_LIMIT}",
                      details=[{"field": "limit", "message": f"1..{MAX_LIMIT}", "type": "int_parsing"}])
    return value


def recent(storage: Storage, *, env: str | None = None, agent: str | None = None, since: datetime | None = None,
           limit: int = 20) -> dict:
    return _read(storage, "recent", env=env, agent=agent_name(agent), since=utc(since), limit=limit)


def experiment(storage: Storage, experiment_id: int, *, bins: int | None = None) -> dict:
    body = _read(storage, "experiment", experiment_id=experiment_id, bins=bins)
    if body is None:
        raise NotFound(f"experiment {experiment_id} is not in the analytics snapshots (it may not exist, or not "
                       "have been snapshotted yet)", details={"experiment_id": experiment_id})
    return body


def leaderboards(storage: Storage, *, env: str | None = None, agent: str | None = None,
                 since: datetime | None = None, limit: int = 20, resamples: int | None = None) -> dict:
    return _read(storage, "leaderboards", env=env, agent=agent_name(agent), since=utc(since), limit=limit,
                 ci_resamples=resamples)


def compare(storage: Storage, *, env: str, agents: str | None = None, since: datetime | None = None,
            resamples: int | None = None) -> dict:
    names = [require_known_agent(a.strip()) for a in (agents or "").split(",") if a.strip()] or None
    try:
        return _read(storage, "compare", env=env, agents=names, since=utc(since), ci_resamples=resamples)
    except NotEnoughData as exc:
        raise Invalid(str(exc), code="not_enough_data", details={"env_name": env, "agents": names}) from None


def datasets(storage: Storage) -> list[dict]:
    return _read(storage, "datasets")
