from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import SessionDep
from api.responses import accepted
from api.schemas import ACCEPTED_HEADERS, ExperimentPublic, TaskPublic, TrainingAccepted
from api.services import training

router = APIRouter(tags=["training"])


@router.post("/api/experiments/{experiment_id}/train", status_code=202, response_model=TrainingAccepted,
             responses={202: {"headers": ACCEPTED_HEADERS}})
def start_training(experiment_id: int, session: SessionDep) -> JSONResponse:
    """Queue one training run per seed; poll the task for progress and the aggregated result."""
    experiment, task, runs = training.start(session, experiment_id)
    content, headers = accepted(task.id, experiment_id=experiment.id, run_ids=[r.id for r in runs],
                                experiment=ExperimentPublic.dump(experiment))
    return JSONResponse(content, status_code=202, headers=headers)


@router.post("/api/tasks/{task_id}/cancel")
def cancel_task(task_id: str, session: SessionDep) -> TaskPublic:
    """Cancel a queued or running task."""
    return TaskPublic.model_validate(training.cancel(session, task_id))
