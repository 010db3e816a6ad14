from __future__ import annotations

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep
from api.schemas import ExperimentCreate, ExperimentPublic
from api.services import experiments

router = APIRouter(prefix="/api/experiments", tags=["experiments"])


@router.post("", status_code=201)
async def create_experiment(body: ExperimentCreate, session: SessionDep) -> ExperimentPublic:
    """Create an experiment on a registered environment; start it with ``POST …/{id}/train``."""
    # Async with one explicit hop: a sync route costs FastAPI a second thread-pool hop to validate
    # the answer, and this is the submission path clients hammer.
    return await run_in_threadpool(experiments.create, session, body)


@router.get("")
def list_experiments(session: SessionDep, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                     status: str | None = Query(None, max_length=20)) -> list[ExperimentPublic]:
    rows = experiments.list_all(session, limit=limit, offset=offset, status=status)
    return [ExperimentPublic.model_validate(e) for e in rows]


@router.get("/{experiment_id}")
def get_experiment(experiment_id: int, session: SessionDep) -> ExperimentPublic:
    return ExperimentPublic.model_validate(experiments.get(session, experiment_id))
