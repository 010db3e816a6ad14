"""The Flask app serving the ``/api/v1`` routes existing clients use, over the same service layer."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError, DBAPIError
from werkzeug.exceptions import HTTPException

from api import jsonbody
from api.errors import NUL_MESSAGE, ApiError, error_body, is_nul_refusal, pydantic_details
from api.responses import accepted
from api.schemas import (
    EnvironmentCreate,
    EnvironmentPublic,
    ExperimentCreate,
    ExperimentPublic,
    StartTraining,
    TaskPublic,
)
from api.services import environments, experiments, tasks, training
from storage.context import Storage

log = logging.getLogger(__name__)


def _json_body(schema: type[BaseModel]) -> Any:
    """The body decoded by the API's one strict JSON reader (:mod:`api.jsonbody`), then validated."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError("a JSON object body is required", code="missing_body")
    if not request.is_json:
        raise jsonbody.malformed()
    payload = jsonbody.loads(raw)
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        raise _Invalid(pydantic_details(exc.errors())) from None


class _Invalid(ApiError):
    status, code = 422, "validation_error"

    def __init__(self, details) -> None:
        super().__init__("the request is not valid", details=details)


def _terminated_input(wsgi_app):
    """a2wsgi's input stream ends where the ASGI body ends; telling werkzeug so lets it read
    chunked bodies that carry no Content-Length instead of treating them as empty."""

    def app(environ, start_response):
        environ.setdefault("wsgi.input_terminated", True)
        return wsgi_app(environ, start_response)

    return app


def create_legacy_app(storage: Storage) -> Flask:
    app = Flask("resimhub.legacy")
    app.wsgi_app = _terminated_input(app.wsgi_app)  # type: ignore[method-assign]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db = storage.db

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return jsonify(exc.body()), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "http_error").lower().replace(" ", "_")
        return jsonify(error_body(code, exc.description or exc.name)), exc.code

    @app.errorhandler(DBAPIError)
    def _db_down(exc: DBAPIError):
        log.warning("database unavailable: %s", exc)
        body = error_body("database_unavailable", "the database is unavailable; retry shortly")
        return jsonify(body), 503, {"Retry-After": "5"}

    @app.errorhandler(OverflowError)
    @app.errorhandler(DataError)
    def _out_of_range(exc: Exception):
        # As in the FastAPI app: a number too large to store is a bad request, not an outage.
        return jsonify(error_body("out_of_range", "a number in the request is larger than the server can store")), 422

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if is_nul_refusal(exc):
            return jsonify(error_body("validation_error", NUL_MESSAGE)), 422
        log.exception("unhandled error in legacy app")
        return jsonify(error_body("internal_error", "internal error; the server log has the details")), 500

    @app.get("/environments")
    def list_environments():
        with db.session() as session:
            return jsonify([EnvironmentPublic.dump(e) for e in environments.list_all(session, limit=1000)])

    @app.post("/environments")
    def register_environment():
        body = _json_body(EnvironmentCreate)
        with db.session() as session:
            environment, task_id = environments.register(session, body.env_name, body.version)
            public = EnvironmentPublic.dump(environment)
        if task_id is None:
            return jsonify(public), 200
        content, headers = accepted(task_id, environment_id=public["id"], environment=public)
        return jsonify(content), 202, headers

    @app.get("/experiments")
    def list_experiments():
        with db.session() as session:
            return jsonify([ExperimentPublic.dump(e) for e in experiments.list_all(session, limit=1000)])

    @app.post("/experiments")
    def create_experiment():
        body = _json_body(ExperimentCreate)
        with db.session() as session:
            return jsonify(experiments.create(session, body).model_dump(mode="json")), 201

    @app.get("/experiments/<int:experiment_id>")
    def get_experiment(experiment_id: int):
        with db.session() as session:
            return jsonify(ExperimentPublic.dump(experiments.get(session, experiment_id)))

    @app.post("/start_training")
    def start_training():
        body = _json_body(StartTraining)
        with db.session() as session:
            experiments.check_restated(experiments.get(session, body.experiment_id), env_name=body.env_name,
                                       algo=body.algo, agent=body.agent)
            experiment, task, runs = training.start(session, body.experiment_id)
            content, headers = accepted(task.id, experiment_id=experiment.id, run_ids=[r.id for r in runs],
                                        experiment=ExperimentPublic.dump(experiment))
        return jsonify(content), 202, headers

    @app.get("/task_status/<task_id>")
    def task_status(task_id: str) -> Response:
        with db.reads() as session:  # a poll: no SQLite write lock (storage/db.py)
            return jsonify(TaskPublic.dump(tasks.get(session, task_id)))

    from api.legacy_benchmark import benchmark_blueprint

    app.register_blueprint(benchmark_blueprint(storage))
    from api.legacy_analytics import analytics_blueprint

    app.register_blueprint(analytics_blueprint(storage))
    return app
