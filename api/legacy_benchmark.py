"""``/api/v1/benchmark/*``: the benchmark routes for Flask clients, over the same service layer.

Errors raised here are the API's own exceptions; the legacy app's handlers turn them into the one
error shape, so a client sees the same codes and statuses on both layers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, send_file

from api import jsonbody
from api.errors import Invalid, Unsupported
from api.responses import accepted
from api.schemas_benchmark import EvaluationPublic, ModelPublic
from api.services import benchmark, tasks
from api.services import models as model_service
from storage.context import Storage

_MAX_RECENT = 1000


def _run_payload() -> Any:
    """JSON or form fields, plus query parameters, exactly as the FastAPI route reads them."""
    mimetype = (request.mimetype or "").lower()
    if mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        if request.files:
            raise Invalid("files are not accepted by /benchmark/run",
                          details=[{"field": k, "message": "files are not accepted here", "type": "string_type"}
                                   for k in request.files])
        body: Any = benchmark.form_payload(request.form.to_dict())
    else:
        raw = request.get_data(cache=True)
        if not raw.strip():
            body = {}
        elif mimetype == "application/json" or mimetype.endswith("+json") or not mimetype:
            body = jsonbody.loads(raw)
        else:
            raise Unsupported(f"send JSON or form fields, not {mimetype}", details={"content_type": mimetype})
    if isinstance(body, dict):
        return {**request.args.to_dict(), **body}
    return body


def _limit() -> int:
    raw = request.args.get("limit", "20")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_RECENT:
        raise Invalid(f"limit must be an integer from 1 to {_MAX_RECENT}",
                      details=[{"field": "limit", "message": f"1..{_MAX_RECENT}", "type": "int_parsing"}])
    return value


def benchmark_blueprint(storage: Storage) -> Blueprint:
    bp = Blueprint("benchmark", __name__, url_prefix="/benchmark")
    db = storage.db

    @bp.post("/upload_model")
    def upload_model():
        upload = request.files.get("file")
        if upload is None:
            raise Invalid("a multipart field 'file' with the model is required",
                          details=[{"field": "file", "message": "Field required", "type": "missing"}])
        normalization = request.files.get("normalization")
        with db.session() as session:
            model = model_service.upload(session, storage.artifacts, upload.stream,
                                         max_bytes=storage.settings.max_upload_bytes,
                                         env_name=request.form.get("env_name"),
                                         activation=request.form.get("activation"), name=request.form.get("name"),
                                         prefix=request.form.get("prefix"),
                                         action_scaling=request.form.get("action_scaling"),
                                         normalization=normalization.stream if normalization is not None else None)
            content, headers = accepted(model.task_id, model_id=model.id, model=ModelPublic.dump(model))
        return jsonify(content), 202, headers

    @bp.get("/models/<model_id>")
    def get_model(model_id: str):
        with db.session() as session:
            return jsonify(ModelPublic.dump(model_service.get(session, model_id)))

    @bp.get("/models/<model_id>/file")
    def download_model(model_id: str):
        with db.session() as session:
            path, filename = model_service.file_of(session, storage.artifacts, model_id)
        return send_file(path, mimetype="application/octet-stream", as_attachment=True, download_name=filename)

    @bp.post("/run")
    def run_evaluation():
        body = benchmark.parse_run(_run_payload())
        with db.session() as session:
            evaluation = benchmark.submit(session, body)
        view = tasks.wait_for(db.reads, evaluation.task_id, body.wait) if body.wait > 0 else None
        status, content, headers = benchmark.submission_answer(evaluation, view)
        return jsonify(content), status, headers

    @bp.get("/evaluations/<evaluation_id>")
    def get_evaluation(evaluation_id: str):
        with db.session() as session:
            return jsonify(EvaluationPublic.dump(benchmark.get(session, evaluation_id)))

    @bp.get("/recent")
    def recent_results():
        with db.session() as session:
            return jsonify(benchmark.recent(session, limit=_limit(), env_name=request.args.get("env") or None))

    @bp.get("/compare")
    def compare_models():
        raw = request.args.get("model_ids")
        if not raw:
            raise Invalid("model_ids is required (comma-separated model ids)",
                          details=[{"field": "model_ids", "message": "Field required", "type": "missing"}])
        with db.session() as session:
            return jsonify(benchmark.compare(session, benchmark.parse_model_ids(raw),
                                             request.args.get("env") or None))

    return bp
