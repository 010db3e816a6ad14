"""A training run's state (one seed of a training task), and the only place it changes.

``queued`` → ``running`` → ``completed`` (trained; its evaluation follows), or ``failed`` or
``cancelled``. A completed run can still fail when its evaluation does. Each transition records its
event (``TrainingRequested``, ``TrainingStarted``, ``TrainingCompleted``, ``TrainingFailed``,
``TrainingCancelled``) in the caller's transaction.

A run that finished stays finished: a redelivered message, a cancel that got there first, or a
failure racing the completion leave it as it ended (callers hold the experiment's row lock, see
:mod:`storage.experiments`, so they see the other's commit).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import outbox
from storage.events import (
    Envelope,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingRequested,
    TrainingStarted,
)
from storage.models import Experiment, TrainingRun, utcnow
from storage.tasks import public_error


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    #: Trained, with a model; its evaluation decides the rest.
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class RunStateError(Exception):
    """A transition the run's current state does not allow."""


class Trained(Protocol):
    """What the RL engine reports about a training (``actors.rl``'s result), as far as the run keeps it."""

    timesteps: int
    episodes: int


def request(session: Session, experiment: Experiment, task_id: str) -> list[TrainingRun]:
    """One queued run per seed of ``experiment`` for the training task ``task_id``, each with its
    ``TrainingRequested`` event."""
    runs = [TrainingRun(experiment_id=experiment.id, task_id=task_id, seed=int(seed), status=RunStatus.QUEUED)
            for seed in experiment.seeds]
    session.add_all(runs)
    session.flush()
    for run in runs:
        outbox.record(session, TrainingRequested(experiment_id=experiment.id, task_id=task_id, run_id=run.id,
                                                 seed=run.seed))
    return runs


def start(session: Session, run: TrainingRun, *, total_timesteps: int, resumed_from: int | None) -> Envelope:
    """The ``train`` actor starts (or, after a redelivery, resumes) the run."""
    if run.status in FINISHED:
        raise RunStateError(f"run {run.id} is already {run.status}")
    run.status, run.total_timesteps = RunStatus.RUNNING, total_timesteps
    run.attempts += 1
    run.started_at = run.started_at or utcnow()
    run.resumed_from = resumed_from
    return outbox.record(session, TrainingStarted(experiment_id=run.experiment_id, task_id=run.task_id,
                                                  run_id=run.id, seed=run.seed, resumed_from=resumed_from))


def complete(session: Session, run: TrainingRun, *, model_id: str, result: Any) -> Envelope:
    """Record the training's ``result`` (the engine's: counts, returns, lengths, wall time) and its
    model. The caller checks first that the run has not finished (a duplicate delivery completing
    it twice, a cancel that arrived first) and then discards its model instead."""
    if run.status in FINISHED:
        raise RunStateError(f"run {run.id} is already {run.status}")
    returns = [float(r) for r in result.episode_returns]
    run.status, run.model_id, run.finished_at = RunStatus.COMPLETED, model_id, utcnow()
    run.timesteps, run.episodes = int(result.timesteps), int(result.episodes)
    run.episode_returns = returns
    run.episode_lengths = [int(n) for n in result.episode_lengths]
    run.best_return = max(returns) if returns else None
    run.wall_time_s = float(result.wall_time_s)
    run.resumed_from = result.resumed_from if result.resumed_from is not None else run.resumed_from
    return outbox.record(session, TrainingCompleted(
        experiment_id=run.experiment_id, task_id=run.task_id, run_id=run.id, model_id=model_id,
        timesteps=run.timesteps, episodes=run.episodes, wall_time_s=run.wall_time_s))


def fail(session: Session, run: TrainingRun, error: dict[str, Any], *, trained: Trained | None = None
         ) -> Envelope | None:
    """Its training failed (``trained``: what a stopped run got through); None if it had already
    finished, e.g. cancelled while it was failing."""
    if run.status in FINISHED:
        return None
    run.status, run.finished_at = RunStatus.FAILED, utcnow()
    run.error = {k: v for k, v in error.items() if k != "traceback"}
    if trained is not None:
        run.timesteps, run.episodes = int(trained.timesteps), int(trained.episodes)
    return outbox.record(session, TrainingFailed(experiment_id=run.experiment_id, task_id=run.task_id,
                                                 run_id=run.id, error=public_error(run.error)))


def fail_evaluation(session: Session, run: TrainingRun, error: dict[str, Any]) -> bool:
    """Its evaluation failed: a trained run fails after all. The event is the evaluation's
    (``EvaluationFailed``, already recorded), so none is added here."""
    if run.status != RunStatus.COMPLETED:
        return False
    run.status, run.error = RunStatus.FAILED, error
    return True


def cancel(session: Session, run: TrainingRun, *, trained: Trained | None = None) -> Envelope | None:
    """Cancel the run: its task was cancelled or ended without it. ``trained`` is what the ``train``
    actor got through when it stopped; for a run the API already cancelled that only records the
    counts and when it stopped. A completed or failed run keeps its outcome."""
    if run.status in FINISHED:
        if run.status == RunStatus.CANCELLED and trained is not None:
            run.timesteps, run.episodes = int(trained.timesteps), int(trained.episodes)
            run.finished_at = run.finished_at or utcnow()
        return None
    if trained is not None:
        run.timesteps, run.episodes = int(trained.timesteps), int(trained.episodes)
    if trained is not None or run.status == RunStatus.QUEUED:
        # A running run stops in its worker, which records when (above).
        run.finished_at = utcnow()
    run.status = RunStatus.CANCELLED
    return outbox.record(session, TrainingCancelled(experiment_id=run.experiment_id, task_id=run.task_id,
                                                    run_id=run.id))


def of_task(session: Session, task_id: str) -> list[TrainingRun]:
    """The task's runs as they are now (reloaded, so a row read before the caller's lock is fresh)."""
    return list(session.scalars(select(TrainingRun).where(TrainingRun.task_id == task_id).order_by(TrainingRun.id)
                                .execution_options(populate_existing=True)))


def all_trained(session: Session, task_id: str) -> bool:
    """Whether every run of the task has finished its training successfully."""
    statuses = session.scalars(select(TrainingRun.status).where(TrainingRun.task_id == task_id)).all()
    return bool(statuses) and all(s == RunStatus.COMPLETED for s in statuses)
