"""``resimhub analytics snapshot``: rebuild the snapshot folder from the database.

It writes every batch the database can produce, with the same mapping the pipeline uses
(:mod:`analytics.rows`), then removes every data file it neither wrote nor saw written during the
rebuild: batches of deleted experiments, files of an older schema version, compacted copies. Run it
twice and the folder holds the same rows. Readers keep working throughout: until the old files go,
the rewritten batches are newer copies and win (see :mod:`analytics.readers`).

The database is read one experiment per short transaction, because SQLite's transactions take its
write lock and a long one would stall a running hub.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from analytics import compaction, rows
from analytics.schemas import DATASETS
from analytics.snapshots import Batch, write_batch
from storage.db import Database
from storage.models import Evaluation, Experiment


@dataclass
class RebuildResult:
    experiments: int = 0
    benchmark_evaluations: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DATASETS, 0))
    files_written: int = 0
    files_removed: int = 0


def _filesystem_now_ns(directory: Path) -> int:
    """The current time as this filesystem stamps files (on a network share, the server's clock)."""
    marker = directory / f".rebuild-{uuid.uuid4().hex}"
    marker.touch()
    try:
        return marker.stat().st_mtime_ns
    finally:
        marker.unlink(missing_ok=True)


def rebuild(db: Database, snapshots_dir: Path | str, *, clean: bool = True,
            progress: Callable[[int, int], None] | None = None) -> RebuildResult:
    snapshots_dir = Path(snapshots_dir)
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    roots = {name: snapshots_dir / name for name in DATASETS}
    result = RebuildResult()
    written: dict[str, set[Path]] = {name: set() for name in DATASETS}

    def emit(batches: list[Batch]) -> None:
        for batch in batches:
            path = write_batch(snapshots_dir, batch)
            if path is not None:
                written[batch.dataset].add(path)
                result.rows[batch.dataset] += len(batch)
                result.files_written += 1

    with contextlib.ExitStack() as stack:
        for root in roots.values():
            stack.enter_context(compaction.exclusive(root, wait=True))
        started_ns = _filesystem_now_ns(snapshots_dir)
        with db.session() as session:
            experiment_ids = list(session.scalars(select(Experiment.id).order_by(Experiment.id)))
            benchmark_ids = list(session.scalars(
                select(Evaluation.id).where(Evaluation.experiment_id.is_(None), Evaluation.status == "completed")
                .order_by(Evaluation.created_at, Evaluation.id)))
        total = len(experiment_ids) + len(benchmark_ids)
        done = 0
        for experiment_id in experiment_ids:
            with db.session() as session:
                experiment = session.get(Experiment, experiment_id)
                if experiment is not None:
                    emit(rows.experiment_batches(session, experiment))
                    result.experiments += 1
            done += 1
            if progress is not None:
                progress(done, total)
        for evaluation_id in benchmark_ids:
            with db.session() as session:
                evaluation = session.get(Evaluation, evaluation_id)
                if evaluation is not None:
                    batches = rows.benchmark_batches(session, evaluation)
                    emit(batches)
                    result.benchmark_evaluations += bool(batches)
            done += 1
            if progress is not None:
                progress(done, total)
        if clean:
            for name, root in roots.items():
                if root.is_dir():
                    result.files_removed += compaction.retire_unlisted(root, written[name], started_ns)
    return result
