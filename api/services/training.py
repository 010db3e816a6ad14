"""Starting and cancelling training: one task per request, one run per seed, one event per run.

The states themselves change in storage (:mod:`storage.experiments`, :mod:`storage.runs`,
:mod:`storage.tasks`); this module decides what a request may do and answers it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Conflict
from api.services import experiments
from api.services.catalog import check_hyperparams
from api.services.tasks import get as get_task
from storage import experiments as experiment_states
from storage import runs, tasks
from storage.models import Experiment, Task, TrainingRun


def start(session: Session, experiment_id: int) -> tuple[Experiment, Task, list[TrainingRun]]:
    # Locked, so two requests at once cannot both start a training (the second sees ``queued``).
    experiment = (session.get(Experiment, experiment_id, with_for_update=True)
                  or experiments.get(session, experiment_id))  # the latter raises NotFound
    if experiment.status in experiment_states.ACTIVE:
        raise Conflict(f"experiment {experiment_id} is already {experiment.status}",
                       code="already_running", details={"experiment_id": experiment_id, "status": experiment.status})
    # Experiments created before an agent's limits were tightened are refused here, not by a failed run.
    check_hyperparams(experiment.agent, dict(experiment.hyperparams or {}))
    task = tasks.create(session, "train", subject=f"experiments/{experiment.id}")
    task.progress = {"fraction": 0.0, "episodes": 0, "timesteps": 0, "latest_return": None}
    task_runs = runs.request(session, experiment, task.id)
    experiment_states.queue(session, experiment)
    session.commit()
    return experiment, task, task_runs


def cancel(session: Session, task_id: str) -> Task:
    """Cancel a queued or running task; running training notices within about a second.

    For a training task the experiment's lock comes first, as for every actor that ends one
    (:mod:`storage.experiments`), and the task is read again under it: a completion or failure
    that committed meanwhile wins, and the cancel is refused as too late instead of overwriting it.
    """
    task = get_task(session, task_id)
    experiment = None
    if task.kind == "train":
        experiment_id = session.scalar(select(TrainingRun.experiment_id).where(TrainingRun.task_id == task.id)
                                       .limit(1))
        if experiment_id is not None:
            experiment = session.get(Experiment, experiment_id, with_for_update=True)
    task = tasks.get(session, task_id, for_update=True)
    if task.status in tasks.TERMINAL:
        raise Conflict(f"task {task_id} is already {task.status}", code="already_finished",
                       details={"task_id": task_id, "status": task.status})
    tasks.cancel(session, task)
    if task.kind == "train":
        for run in runs.of_task(session, task.id):
            runs.cancel(session, run)  # TrainingCancelled for each run still queued or running
        if experiment is not None:
            experiment_states.cancel(session, experiment)
    session.commit()
    return task
