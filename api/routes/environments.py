from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import SessionDep
from api.responses import accepted
from api.schemas import ACCEPTED_HEADERS, EnvironmentAccepted, EnvironmentCreate, EnvironmentPublic
from api.services import environments

router = APIRouter(prefix="/api/environments", tags=["environments"])


@router.post("", status_code=202, response_model=EnvironmentAccepted,
             responses={202: {"headers": ACCEPTED_HEADERS},
                        200: {"model": EnvironmentPublic, "description": "already registered"}})
def register_environment(body: EnvironmentCreate, session: SessionDep) -> JSONResponse:
    """Register a Gymnasium id; a worker builds and steps it, poll the returned task for the result."""
    environment, task_id = environments.register(session, body.env_name, body.version)
    public = EnvironmentPublic.dump(environment)
    if task_id is None:
        return JSONResponse(public, status_code=200)
    content, headers = accepted(task_id, environment_id=environment.id, environment=public)
    return JSONResponse(content, status_code=202, headers=headers)


@router.get("")
def list_environments(session: SessionDep, limit: int = Query(100, ge=1, le=1000),
                      offset: int = Query(0, ge=0)) -> list[EnvironmentPublic]:
    return [EnvironmentPublic.model_validate(e) for e in environments.list_all(session, limit=limit, offset=offset)]


@router.get("/{environment_id}")
def get_environment(environment_id: int, session: SessionDep) -> EnvironmentPublic:
    return EnvironmentPublic.model_validate(environments.get(session, environment_id))
