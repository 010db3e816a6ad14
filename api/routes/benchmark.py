from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from api import jsonbody
from api.deps import SessionDep, StorageDep
from api.errors import Unsupported
from api.responses import accepted
from api.schemas import ACCEPTED_HEADERS
from api.schemas_benchmark import (
    MAX_COMPARE,
    Comparison,
    EvaluationCreate,
    EvaluationPublic,
    ModelPublic,
    RecentEvaluation,
    RunAccepted,
    RunOutcome,
    UploadAccepted,
)
from api.services import benchmark, tasks
from api.services import models as model_service

router = APIRouter(prefix="/benchmark", tags=["benchmark"])

_RUN_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": EvaluationCreate.model_json_schema()},
        "application/x-www-form-urlencoded": {"schema": EvaluationCreate.model_json_schema()},
        "multipart/form-data": {"schema": EvaluationCreate.model_json_schema()},
    },
}


async def run_payload(request: Request) -> Any:
    """The run request as a mapping, whether it came as JSON or as form fields; query parameters
    (``?wait=5``) count as fields too, as docs/architecture.md,
    "Submitting work and waiting for it", allows ``wait`` on the submission URL."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        body: Any = benchmark.form_payload(await request.form())
    elif not raw.strip():
        body = {}
    elif content_type == "application/json" or content_type.endswith("+json") or not content_type:
        body = jsonbody.loads(raw)
    else:
        raise Unsupported(f"send JSON or form fields, not {content_type}", details={"content_type": content_type})
    if isinstance(body, dict):
        return {**dict(request.query_params), **body}
    return body


@router.post("/upload_model", status_code=202, response_model=UploadAccepted,
             responses={202: {"headers": ACCEPTED_HEADERS}})
def upload_model(
    session: SessionDep,
    storage: StorageDep,
    file: Annotated[UploadFile, File(description="the model file: ResimHub .npz, .npz or PyTorch state dict, "
                                                 "safetensors or ONNX; plain pickle is refused")],
    env_name: Annotated[str | None, Form(max_length=200, description="Gymnasium id the model is for; "
                                                                     "checks its input/output sizes")] = None,
    activation: Annotated[str | None, Form(description="relu or tanh, for files that do not record it; left "
                                                       "out, the default for the recognised layout is used and "
                                                       "listed in the model's assumptions")] = None,
    name: Annotated[str | None, Form(max_length=200)] = None,
    prefix: Annotated[str | None, Form(max_length=200, description="the acting layer stack of a state dict "
                                                                   "holding several, e.g. 'actor' or "
                                                                   "'q_net.q_net'")] = None,
    action_scaling: Annotated[str | None, Form(description="continuous ONNX outputs: 'clip' (actions in the "
                                                           "env's units, clipped to the bounds) or 'squashed' "
                                                           "(tanh outputs in [-1, 1], rescaled to the bounds; "
                                                           "'tanh' is the same)")]
    = None,
    normalization: Annotated[UploadFile | None, File(description="observation normalisation statistics "
                                                                 "(VecNormalize's) as JSON or .npz: obs_mean, "
                                                                 "obs_var, epsilon, clip_obs")] = None,
) -> JSONResponse:
    """Upload a policy; it is checked by content at once and validated by a worker in the sandbox
    (poll the task). The validation result lists every assumption the hub made to read the file."""
    model = model_service.upload(session, storage.artifacts, file.file, max_bytes=storage.settings.max_upload_bytes,
                                 env_name=env_name, activation=activation, name=name, prefix=prefix,
                                 action_scaling=action_scaling,
                                 normalization=normalization.file if normalization is not None else None)
    content, headers = accepted(model.task_id, model_id=model.id, model=ModelPublic.dump(model))
    return JSONResponse(content, status_code=202, headers=headers)


@router.get("/models/{model_id}")
def get_model(model_id: str, session: SessionDep) -> ModelPublic:
    return ModelPublic.model_validate(model_service.get(session, model_id))


@router.get("/models/{model_id}/file", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                  "format": "binary"}}}}})
def download_model(model_id: str, session: SessionDep, storage: StorageDep) -> FileResponse:
    """The stored file, byte for byte as uploaded (its sha256 is in the model view)."""
    path, filename = model_service.file_of(session, storage.artifacts, model_id)
    return FileResponse(path, media_type="application/octet-stream", filename=filename)


@router.post("/run", status_code=202, openapi_extra={"requestBody": _RUN_BODY}, response_model=RunAccepted,
             responses={202: {"headers": ACCEPTED_HEADERS},
                        200: {"model": RunOutcome, "description": "finished within `wait`: the outcome inline",
                              "headers": {"Location": ACCEPTED_HEADERS["Location"]}}})
async def run_evaluation(payload: Annotated[Any, Depends(run_payload)], session: SessionDep,
                         storage: StorageDep) -> JSONResponse:
    """Evaluate a stored model for N seeded episodes on a worker; ``wait`` answers inline when done."""
    body = benchmark.parse_run(payload)
    evaluation = await run_in_threadpool(benchmark.submit, session, body)
    view = await tasks.wait_for_async(storage.db.reads, evaluation.task_id, body.wait) if body.wait > 0 else None
    status, content, headers = benchmark.submission_answer(evaluation, view)
    return JSONResponse(content, status_code=status, headers=headers)


@router.get("/evaluations/{evaluation_id}")
def get_evaluation(evaluation_id: str, session: SessionDep) -> EvaluationPublic:
    return EvaluationPublic.model_validate(benchmark.get(session, evaluation_id))


@router.get("/recent")
def recent_results(session: SessionDep, limit: int = Query(20, ge=1, le=1000),
                   env: str | None = Query(None, max_length=200, description="only this Gymnasium id")
                   ) -> list[RecentEvaluation]:
    """Completed evaluations, newest first."""
    return benchmark.recent(session, limit=limit, env_name=env)


@router.get("/compare")
def compare_models(session: SessionDep,
                   model_ids: str = Query(..., max_length=40 * MAX_COMPARE, description="comma-separated ids"),
                   env: str | None = Query(None, max_length=200, description="defaults to the models' env")
                   ) -> Comparison:
    """Rank models by their latest evaluation on one env (IQM, ties by mean − std) with pairwise
    probability of improvement and Welch / Mann–Whitney tests."""
    return benchmark.compare(session, benchmark.parse_model_ids(model_ids), env)
