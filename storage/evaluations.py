"""An evaluation's state, and the only place it changes.

``queued`` → ``running`` → ``completed`` or ``failed``; finishing records ``EvaluationCompleted`` /
``EvaluationFailed`` in the caller's transaction. A finished evaluation stays finished: a
redelivered message that ran the episodes a second time, or a give-up racing the result, changes
nothing and emits nothing, so the aggregate step folds each evaluation in once. Callers that finish
an evaluation hold its row lock (``session.get(Evaluation, id, with_for_update=True)``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from storage import outbox
from storage.events import Envelope, EvaluationCompleted, EvaluationFailed
from storage.models import Evaluation, utcnow
from storage.tasks import public_error


class EvaluationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


FINISHED = frozenset({EvaluationStatus.COMPLETED, EvaluationStatus.FAILED})


def start(session: Session, evaluation: Evaluation) -> bool:
    """The ``evaluate`` actor begins (again, after a retry); False if the evaluation already finished."""
    if evaluation.status in FINISHED:
        return False
    evaluation.status = EvaluationStatus.RUNNING
    return True


def complete(session: Session, evaluation: Evaluation, result: dict[str, Any]) -> Envelope | None:
    """Store ``result`` (every metric, ``mean_reward`` and ``std_reward`` among them); None if the
    evaluation had already finished."""
    if evaluation.status in FINISHED:
        return None
    evaluation.status, evaluation.result = EvaluationStatus.COMPLETED, result
    evaluation.mean_reward, evaluation.finished_at = result["mean_reward"], utcnow()
    return outbox.record(session, EvaluationCompleted(
        evaluation_id=evaluation.id, task_id=evaluation.task_id or "", model_id=evaluation.model_id,
        env_name=evaluation.env_name, mean_reward=result["mean_reward"], std_reward=result["std_reward"],
        episodes=evaluation.episodes, experiment_id=evaluation.experiment_id, run_id=evaluation.run_id))


def fail(session: Session, evaluation: Evaluation, error: dict[str, Any]) -> Envelope | None:
    """Record why it failed (what clients may see of ``error``); None if it had already finished."""
    if evaluation.status in FINISHED:
        return None
    public = public_error(error)
    evaluation.status, evaluation.error, evaluation.finished_at = EvaluationStatus.FAILED, public, utcnow()
    return outbox.record(session, EvaluationFailed(
        evaluation_id=evaluation.id, task_id=evaluation.task_id or "", model_id=evaluation.model_id, error=public,
        experiment_id=evaluation.experiment_id, run_id=evaluation.run_id))
