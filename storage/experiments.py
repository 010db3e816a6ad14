"""An experiment's state, and the only place it changes.

An experiment is ``created``; ``POST .../train`` queues a training task (``queued``), its first
run starting makes it ``training``, its last run finishing its training makes it ``evaluating``,
and the task ends it ``completed``, ``failed`` or ``cancelled``; a new ``POST .../train`` starts
over from any of those three.

How a training task ends is recorded exactly once: ``complete()`` and ``fail()`` change the status
together with the ``ExperimentCompleted`` / ``ExperimentFailed`` event in the caller's transaction
(the outbox), so the event log and webhooks see each outcome exactly once.

Callers hold the experiment's row lock (``session.get(Experiment, id, with_for_update=True)``),
taken before they change the task or the runs, so that several runs failing at once, a failure
racing the aggregation, or a cancel racing either, serialise on it and only the first one
finishes the experiment.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import outbox
from storage.events import Envelope, ExperimentCompleted, ExperimentFailed
from storage.models import Experiment, TrainingRun
from storage.tasks import public_error


class ExperimentStatus(StrEnum):
    CREATED = "created"
    QUEUED = "queued"
    TRAINING = "training"
    EVALUATING = "evaluating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A training task is under way: a second ``POST .../train`` is refused, a cancel ends it.
ACTIVE = frozenset({ExperimentStatus.QUEUED, ExperimentStatus.TRAINING, ExperimentStatus.EVALUATING})
#: States an experiment's training task cannot leave (a new ``POST .../train`` starts over).
FINISHED = frozenset({ExperimentStatus.COMPLETED, ExperimentStatus.FAILED, ExperimentStatus.CANCELLED})


class ExperimentStateError(Exception):
    """A transition the experiment's current state does not allow."""


def queue(session: Session, experiment: Experiment) -> None:
    """A new training task was created for it (its runs and their events are :func:`storage.runs.request`'s)."""
    if experiment.status in ACTIVE:
        raise ExperimentStateError(f"experiment {experiment.id} is already {experiment.status}")
    experiment.status = ExperimentStatus.QUEUED
    experiment.results = None


def start_training(session: Session, experiment: Experiment) -> bool:
    """A run started; the first one makes the experiment ``training``. Returns whether it changed."""
    if experiment.status not in (ExperimentStatus.CREATED, ExperimentStatus.QUEUED):
        return False
    experiment.status = ExperimentStatus.TRAINING
    return True


def start_evaluating(session: Session, experiment: Experiment) -> bool:
    """Every run of the task is trained and only evaluations remain. Not from a finished state: a
    task that failed or was cancelled while its last run was finishing stays as it ended."""
    if experiment.status not in (ExperimentStatus.QUEUED, ExperimentStatus.TRAINING):
        return False
    experiment.status = ExperimentStatus.EVALUATING
    return True


def cancel(session: Session, experiment: Experiment) -> bool:
    """The user cancelled its training task; an experiment that already ended keeps its outcome."""
    if experiment.status not in ACTIVE:
        return False
    experiment.status = ExperimentStatus.CANCELLED
    return True


def complete(session: Session, experiment: Experiment, *, task_id: str, results: dict[str, Any]) -> Envelope:
    """Record ``results`` (as :func:`actors.aggregation.experiment_results` builds them). Only an
    experiment under way completes; the caller has checked that its task is not finished, which
    under the row lock means the experiment is not either, so anything else is a bug."""
    if experiment.status not in ACTIVE:
        raise ExperimentStateError(f"experiment {experiment.id} is {experiment.status}, it cannot complete")
    experiment.status, experiment.results = ExperimentStatus.COMPLETED, results
    runs = results.get("runs") or []
    return outbox.record(session, ExperimentCompleted(
        experiment_id=experiment.id, task_id=task_id, env_name=results["env_name"], agent=results["agent"],
        mean_return=results["mean_return"], iqm=results["iqm"], ci95=list(results["ci95"]),
        statistics_over=results["statistics_over"], seeds=list(results["seeds"]),
        final_returns=list(results["final_returns"]),
        runs=[{"run_id": r["run_id"], "seed": r["seed"], "model_id": r["model_id"],
               "mean": (r.get("evaluation") or {}).get("mean"),
               "episodes": (r.get("evaluation") or {}).get("episodes")} for r in runs],
        episodes=int(sum((r.get("evaluation") or {}).get("episodes") or 0 for r in runs)),
        training_episodes=results["training_episodes"], timesteps=results["timesteps"],
        solved=results.get("solved"), reward_threshold=results.get("reward_threshold")))


def fail(session: Session, experiment: Experiment, *, task_id: str | None, stage: str, error: dict[str, Any],
         run_id: int | None = None) -> Envelope | None:
    """Fail the experiment unless its task already ended; returns the event, or None if it had.

    A failure of an earlier training task (its last evaluation failing, or an actor giving up on
    it, after the experiment was cancelled and trained again) is not the current training's and
    changes nothing.
    """
    if experiment.status in FINISHED:
        return None
    if task_id is not None and task_id != current_task_id(session, experiment.id):
        return None
    experiment.status = ExperimentStatus.FAILED
    public = public_error(error)
    return outbox.record(session, ExperimentFailed(
        experiment_id=experiment.id, task_id=task_id, stage=stage,
        reason=str(error.get("message") or error.get("code") or "failed"), error=public, run_id=run_id))


def current_task_id(session: Session, experiment_id: int) -> str | None:
    """The experiment's latest training task: the one whose runs were created last."""
    return session.scalar(select(TrainingRun.task_id).where(TrainingRun.experiment_id == experiment_id)
                          .order_by(TrainingRun.id.desc()).limit(1))
