"""Starting and cancelling training: one task per request, one run per seed, one event per run."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Conflict
from api.services import experiments
from api.services.catalog import check_hyperparams
from api.services.tasks import get as get_task
from storage import outbox, tasks
from storage.events import TrainingCancelled, TrainingRequested
from storage.models import Experiment, Task, TrainingRun

ACTIVE = frozenset({"queued", "training", "evaluating"})


def start(session: Session, experiment_id: int) -> tuple[Experiment, Task, list[TrainingRun]]:
    experiment = experiments.get(session, experiment_id)
    if experiment.status in ACTIVE:
        raise Conflict(f"experiment {experiment_id} is already {experiment.status}",
                       code="already_running", details={"experiment_id": experiment_id, "status": experiment.status})
    # Experiments created before an agent's limits were tightened are refused here, not by a failed run.
    check_hyperparams(experiment.agent, dict(experiment.hyperparams or {}))
    task = tasks.create(session, "train", subject=f"experiments/{experiment.id}")
    task.progress = {"fraction": 0.0, "episodes": 0, "timesteps": 0, "latest_return": None}
    runs = [TrainingRun(experiment_id=experiment.id, task_id=task.id, seed=int(seed), status="queued")
            for seed in experiment.seeds]
    session.add_all(runs)
    session.flush()
    for run in runs:
        outbox.record(session, TrainingRequested(experiment_id=experiment.id, task_id=task.id, run_id=run.id,
                                                 seed=run.seed))
    experiment.status = "queued"
    experiment.results = None
    session.commit()
    return experiment, task, runs


def cancel(session: Session, task_id: str) -> Task:
    """Cancel a queued or running task; running training notices within about a second."""
    task = get_task(session, task_id)
    if task.status in tasks.TERMINAL:
        raise Conflict(f"task {task_id} is already {task.status}", code="already_finished",
                       details={"task_id": task_id, "status": task.status})
    tasks.cancel(session, task)
    if task.kind == "train":
        runs = session.scalars(select(TrainingRun).where(TrainingRun.task_id == task.id)).all()
        for run in runs:
            if run.status in ("queued", "running"):
                run.status = "cancelled"
                outbox.record(session, TrainingCancelled(experiment_id=run.experiment_id, task_id=task.id,
                                                         run_id=run.id))
        if runs:
            experiment = session.get(Experiment, runs[0].experiment_id)
            if experiment is not None and experiment.status in ACTIVE:
                experiment.status = "cancelled"
    session.commit()
    return task
