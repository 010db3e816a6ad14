"""Prometheus metrics for the gateway, one module per concern:

* :mod:`.http`: HTTP traffic, counted by a middleware as requests pass, labelled by route template;
* :mod:`.database`: the hub's state from the database, computed when Prometheus scrapes;
* :mod:`.queues`: the depth of each stage's queue, from the broker handed in;
* :mod:`.hub`: the scrape-time collector of those sources; :mod:`.exposition`: the document.

Worker processes export Dramatiq's own metrics (``dramatiq_*``) on their own port; see
``actors/bus.py`` and docs/operations.md for which process serves which metric.
"""

from __future__ import annotations

import dramatiq
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.metrics.exposition import MetricsState
from api.metrics.http import HttpMetrics, HttpMetricsMiddleware, label_flask_routes
from api.metrics.hub import HubCollector
from api.metrics.queues import depth_reader
from storage.context import Storage

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus exposition: HTTP traffic and the hub's state (docs/operations.md lists every metric)."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, storage: Storage, broker: dramatiq.Broker | None = None) -> None:
    """Serve ``/metrics`` and count every request; ``broker`` is the in-process broker whose queues
    to report (``resimhub up``), if this process runs one."""
    http = HttpMetrics()
    app.state.metrics = MetricsState(http=http, hub=HubCollector(storage, depth_reader(storage.settings, broker)))
    app.include_router(router)
    legacy = getattr(app.state, "legacy_app", None)
    if legacy is not None:
        label_flask_routes(legacy)
    app.add_middleware(HttpMetricsMiddleware, metrics=http, flask_app=legacy)
