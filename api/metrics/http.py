"""HTTP traffic: requests and their latency by method, route template and status.

The ``route`` label is the template the framework served the request by, never its path, so ids
never become label values. After routing, Starlette leaves the FastAPI route in ``scope["route"]``
(its ``path_format``); the Flask app under ``/api/v1`` knows its ``request.url_rule``, which a
signal hands back through the ASGI scope (:func:`label_flask_routes`). The key check answers some
requests before any router sees them (401, 403, 429): those alone are matched here, by the routes'
own ``matches`` and Werkzeug's URL map, so a refused request is counted under the template that
would have served it.

With ``resimhub api --workers N`` each process writes its counts to ``PROMETHEUS_MULTIPROC_DIR``
and any process's ``/metrics`` reports the sum (:mod:`api.metrics.exposition`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

import flask
from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric
from starlette.routing import Match, Mount

from api.logging_setup import ROUTE_KEY

try:  # FastAPI ≥ 0.120 nests included routers; this lists the routes inside them
    from fastapi.routing import iter_route_contexts
except ImportError:  # earlier releases keep app.router.routes flat
    def iter_route_contexts(routes):
        return iter(routes)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNMATCHED = "unmatched"
#: Where the Flask app leaves the rule that served a request, in the ASGI scope.
FLASK_RULE_KEY = "resimhub.flask_rule"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FLASK_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class HttpMetrics:
    """The request counter and latency histogram of one app; also a collector of itself."""

    def __init__(self) -> None:
        self.requests = Counter("resimhub_http_requests", "HTTP requests answered, by method, route template and "
                                "status.", ["method", "route", "status"], registry=None)
        self.duration = Histogram("resimhub_http_request_duration_seconds", "Time to answer an HTTP request, by "
                                  "method and route template.", ["method", "route"], buckets=LATENCY_BUCKETS,
                                  registry=None)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def collect(self) -> Iterable[Metric]:
        """The families minus their ``*_created`` series, which say when each label set first
        appeared: noise on a dashboard, and absent in multi-process mode anyway, so both modes
        export the same names."""
        for metric in (m for family in (self.requests, self.duration) for m in family.collect()):
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


# -- route templates ----------------------------------------------------------------------------
def _record_rule(_sender: flask.Flask, **_extra) -> None:
    rule = flask.request.url_rule  # matched when the request context was pushed
    scope = flask.request.environ.get("asgi.scope")  # a2wsgi hands the ASGI scope to the WSGI app
    if rule is not None and scope is not None:
        scope[FLASK_RULE_KEY] = rule.rule


def label_flask_routes(flask_app: flask.Flask) -> None:
    """Have ``flask_app`` report the rule of each request it serves. A signal rather than a
    ``before_request`` hook, so that no hook of the app answering first can skip it."""
    flask.request_started.connect(_record_rule, flask_app)


def _flask_template(prefix: str, rule: str) -> str:
    return prefix + _FLASK_PARAM.sub(r"{\1}", rule)


def routed_template(scope, root_path: str) -> str | None:
    """The template the routers picked, read from the scope after the app answered; ``None`` when
    no router saw the request. ``root_path`` is the scope's before routing (a mount extends it)."""
    mount = scope.get("root_path", "")[len(root_path):]
    if scope.get(FLASK_RULE_KEY) is not None:
        return _flask_template(mount, scope[FLASK_RULE_KEY])
    route = scope.get("route")
    if route is not None and not isinstance(route, Mount) and getattr(route, "path_format", None):
        return route.path_format
    if mount:
        return mount + "/{path}"  # the mounted app had no rule for it (its 404 or 405)
    return UNMATCHED if "router" in scope else None  # the router sets "router" first thing


def matched_template(app, flask_app: flask.Flask | None, method: str, path: str, root_path: str) -> str:
    """The template of the route the router would pick for a request answered before routing."""
    if app is None:
        return UNMATCHED
    probe = {"type": "http", "path": path, "method": method, "root_path": root_path}
    partial = None
    for route in iter_route_contexts(app.router.routes):
        match, child = route.matches(probe)
        if match is Match.FULL:
            return _template_of(route, child, flask_app, probe)
        if match is Match.PARTIAL and partial is None:
            partial = (route, child)
    return _template_of(*partial, flask_app, probe) if partial is not None else UNMATCHED


def _template_of(route, child, flask_app: flask.Flask | None, probe) -> str:
    if not isinstance(getattr(route, "original_route", route), Mount):
        return getattr(route, "path_format", None) or UNMATCHED
    mount = child["root_path"][len(probe["root_path"]):]
    rest = probe["path"][len(probe["root_path"]) + len(mount):] or "/"
    if flask_app is None:
        return mount + "/{path}"
    try:
        rule, _ = flask_app.url_map.bind("resimhub").match(rest, method=probe["method"], return_rule=True)
    except Exception:  # noqa: BLE001 - 404/405/redirects: the mount is all we can name
        return mount + "/{path}"
    return _flask_template(mount, rule.rule)


class HttpMetricsMiddleware:
    """Counts every answer, the ones middleware gives before routing included; leaves the route
    template in the scope for the request log (``ROUTE_KEY``)."""

    def __init__(self, app, metrics: HttpMetrics, flask_app: flask.Flask | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.flask_app = flask_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        start = time.perf_counter()
        path, root_path = scope["path"], scope.get("root_path", "")  # routing rewrites them for mounts

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = routed_template(scope, root_path)
            if route is None:
                route = matched_template(scope.get("app"), self.flask_app, scope["method"], path, root_path)
            scope[ROUTE_KEY] = route
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
