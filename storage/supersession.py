"""Retraining: an experiment's results are those of its latest completed training, and only those.

``POST /api/experiments/{id}/train`` on a finished experiment starts a new training task with new
runs. When that task completes, the models of the experiment's earlier trainings are marked
*superseded* (:func:`supersede_earlier`, in the aggregation's transaction): the model resource says
so, and neither the experiment's statistics nor the leaderboards count those runs again. The
statistics only ever fold in the runs of the completing task (actors/aggregation.py); the
leaderboards read the Parquet snapshots, which are append-only, and keep the rows of each
experiment's latest training task there by the same rule (analytics/reports.py). A superseded model
stays usable: it can still be downloaded, evaluated and compared by id.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from storage.models import Model, utcnow


def supersede_earlier(session: Session, experiment_id: int, task_id: str, *, now: datetime | None = None) -> int:
    """Mark the trained models of ``experiment_id`` that ``task_id`` did not produce, and that are
    not marked yet, as superseded by it; returns how many. Call it in the transaction that completes
    ``task_id``."""
    result = session.execute(
        update(Model)
        .where(Model.experiment_id == experiment_id, Model.source == "training", Model.task_id != task_id,
               Model.superseded_at.is_(None))
        .values(superseded_at=now or utcnow(), superseded_by_task_id=task_id)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)
