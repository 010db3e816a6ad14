"""The gateway: one ASGI app with the FastAPI routes and the Flask legacy app under ``/api/v1``."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import anyio.to_thread
import dramatiq
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from analytics import engine
from api.errors import NUL_MESSAGE, ApiError, error_body, is_nul_refusal, pydantic_details
from api.middleware import BodyLimit, StrictJsonBodies
from api.schemas import ERROR_RESPONSES
from storage.context import Storage

log = logging.getLogger(__name__)

THREADPOOL_SIZE = 8
UPLOAD_PREFIXES = ("/benchmark/upload_model", "/api/v1/benchmark/upload_model")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "rate_limited"}


def create_app(storage: Storage, *, broker: dramatiq.Broker | None = None) -> FastAPI:
    """The gateway on ``storage``; ``broker`` is the in-process broker of ``resimhub up``, whose
    queues ``/metrics`` reports (a cluster gateway reads RabbitMQ's from the settings instead)."""
    from api.legacy import create_legacy_app
    from api.routes import (
        agents,
        analytics,
        benchmark,
        environments,
        events,
        experiments,
        health,
        index,
        tasks,
        training,
        webhooks,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # Sync routes run in AnyIO's thread pool (40 threads by default). More threads than pooled
        # database connections only queue on the pool while fighting over the GIL, so match them.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADPOOL_SIZE
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="ReSimHub",
        version="0.1.0",
        description="Register Gymnasium environments, train and evaluate RL agents on distributed workers, "
        "poll long work as tasks and read the event log.",
    )
    app.state.storage = storage
    settings = storage.settings
    engine.configure(memory_mb=settings.analytics_memory_mb, threads=settings.analytics_threads,
                     readers=settings.analytics_readers)
    for module in (agents, environments, experiments, training, tasks, events, benchmark, webhooks, analytics):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.include_router(health.router)
    app.include_router(index.router)
    _install_error_handlers(app)

    from a2wsgi import WSGIMiddleware

    legacy = create_legacy_app(storage)
    app.state.legacy_app = legacy  # its url_map lists the /api/v1 routes (the OpenAPI does not)
    app.mount("/api/v1", WSGIMiddleware(legacy))
    # Added first, so it runs inside BodyLimit: the body it reads whole is already bounded.
    app.add_middleware(StrictJsonBodies)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, upload_bytes=settings.max_upload_bytes,
                       upload_prefixes=UPLOAD_PREFIXES)
    _install_observability_and_auth(app, storage, broker)
    return app


def _install_observability_and_auth(app: FastAPI, storage: Storage, broker: dramatiq.Broker | None) -> None:
    # Middleware added last runs first: the request id and the metrics see every answer, the key
    # check's refusals included, and CORS (when configured) answers preflights before the key check.
    from api import auth, metrics
    from api.logging_setup import RequestContext
    from api.routes import keys

    app.include_router(keys.router, responses=ERROR_RESPONSES)
    auth.install(app, storage)
    metrics.install(app, storage, broker)
    app.add_middleware(RequestContext)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("malformed_json", "the request body is not valid JSON",
                                           pydantic_details(errors)), status_code=400)
        return JSONResponse(error_body("validation_error", "the request is not valid", pydantic_details(errors)),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database_down(_request: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(error_body("database_unavailable", "the database is unavailable; retry shortly"),
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def _out_of_range(_request: Request, exc: Exception) -> JSONResponse:
        # An id or offset beyond what SQLite, PostgreSQL or Arrow can hold is the client's mistake:
        # neither a 500 nor (PostgreSQL's DataError being a DBAPIError) "database unavailable".
        return JSONResponse(error_body("out_of_range", "a number in the request is larger than the server can store"),
                            status_code=422)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        if is_nul_refusal(exc):
            return JSONResponse(error_body("validation_error", NUL_MESSAGE), status_code=422)
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal error; the server log has the details"),
                            status_code=500)
