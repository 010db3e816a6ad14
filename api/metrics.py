"""Prometheus metrics for the gateway: HTTP traffic by route template, and the hub's state.

Two kinds of numbers, measured in two ways:

* **HTTP** — counted by a middleware as requests pass, labelled by the route *template*
  (``/api/experiments/{experiment_id}``, and the Flask rule under ``/api/v1``) so that ids never
  become label values. With ``resimhub api --workers N`` each process writes them to
  ``PROMETHEUS_MULTIPROC_DIR`` and any process's ``/metrics`` reports the sum.
* **The hub's state** — computed when Prometheus scrapes, from the database and the broker, by
  :class:`HubCollector`. The database is the one place that knows about every worker's progress, so
  any gateway process answers for the whole cluster and nothing is lost when a worker restarts.
  Every query is an indexed or small aggregate with a time limit; a source that fails shows up as
  ``resimhub_metrics_source_up{source=…} 0`` rather than as a failed scrape.

Worker processes export Dramatiq's own metrics (``dramatiq_*``) on their own port; see
``actors/bus.py`` and docs/operations.md for which process serves which metric.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from sqlalchemy import func, inspect, select, text
from starlette.routing import Match, Mount

from api.logging_setup import ROUTE_KEY
from storage.context import Storage
from storage.models import Evaluation, EventRecord, Experiment, Task, TrainingRun, utcnow

log = logging.getLogger(__name__)

#: The stages' queues, as ``actors/bus.py`` declares them (the API may not import actors; a test
#: keeps the two lists equal).
QUEUES = ("environments", "training", "evaluation", "aggregation", "models", "webhooks", "failures")
#: Statement timeout for the scrape's queries on PostgreSQL.
QUERY_TIMEOUT_MS = 2_000
#: How many of the most recent finished runs / evaluations the throughput gauges average over.
RECENT = 20
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FLASK_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
UNMATCHED = "unmatched"


# -- HTTP ---------------------------------------------------------------------------------------
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
        return _without_created(self.requests, self.duration)


def _without_created(*metrics) -> Iterable[Metric]:
    """Their families minus the ``*_created`` series, which say when each label set first appeared:
    noise on a dashboard, and absent in multi-process mode anyway, so both modes export the same names."""
    for metric in (m for family in metrics for m in family.collect()):
        metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
        yield metric


def _flat_routes(app) -> list:
    routes = list(app.router.routes)
    try:  # FastAPI ≥ 0.120 nests included routers; this flattens them into routes with templates
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return routes
    return list(iter_route_contexts(routes))


class RouteNamer:
    """Names a request by the template of the route that served it, or would have: requests refused
    before routing (no key, rate limited) are matched here so they are labelled the same way."""

    def __init__(self) -> None:
        self._routes: list = []
        self._seen = -1

    def __call__(self, scope, path: str, root_path: str) -> str:
        route = scope.get("route")
        if route is not None and not isinstance(route, Mount) and getattr(route, "path_format", None):
            return route.path_format
        app = scope.get("app")
        if app is None:
            return UNMATCHED
        if len(app.router.routes) != self._seen:
            self._routes, self._seen = _flat_routes(app), len(app.router.routes)
        probe = {"type": "http", "path": path, "method": scope["method"], "root_path": root_path}
        partial = None
        for candidate in self._routes:
            match, _ = candidate.matches(probe)
            if match is Match.FULL:
                return self._name(candidate, probe)
            if match is Match.PARTIAL and partial is None:
                partial = candidate
        return self._name(partial, probe) if partial is not None else UNMATCHED

    @staticmethod
    def _name(candidate, probe) -> str:
        original = getattr(candidate, "original_route", candidate)
        if isinstance(original, Mount):
            return _mounted_template(original, probe)
        return getattr(candidate, "path_format", None) or UNMATCHED


def _mounted_template(mount: Mount, probe) -> str:
    fallback = mount.path + "/{path}"
    url_map = getattr(getattr(mount.app, "app", None), "url_map", None)  # a2wsgi wraps the Flask app
    if url_map is None:
        return fallback
    rest = probe["path"][len(probe["root_path"]) + len(mount.path):] or "/"
    try:
        rule, _ = url_map.bind("resimhub").match(rest, method=probe["method"], return_rule=True)
    except Exception:  # noqa: BLE001 - 404/405/redirects: the mount is all we can name
        return fallback
    return mount.path + _FLASK_PARAM.sub(r"{\1}", rule.rule)


class HttpMetricsMiddleware:
    def __init__(self, app, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.namer = RouteNamer()

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
            route = self.namer(scope, path, root_path)
            scope[ROUTE_KEY] = route
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)


# -- the hub's state ----------------------------------------------------------------------------
@dataclass
class _Source:
    name: str
    collect: Callable[[], list[Metric]]


class HubCollector:
    """Domain metrics computed at scrape time (see the module docstring)."""

    def __init__(self, storage: Storage, broker_queues: Callable[[], dict[str, dict[str, int]]] | None = None) -> None:
        self.storage = storage
        self.broker_queues = broker_queues or self._broker_queues
        self._webhook_tables = False
        self._down: set[str] = set()

    def describe(self) -> list[Metric]:
        return []  # collected only when scraped, never at registration

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("resimhub_metrics_source_up", "1 when the source answered this scrape, 0 when it "
                               "failed (the log says why).", labels=["source"])
        took = GaugeMetricFamily("resimhub_metrics_source_duration_seconds", "Time this scrape spent reading the "
                                 "source.", labels=["source"])
        for source in (_Source("database", self._database), _Source("webhooks", self._webhooks),
                       _Source("broker", self._queues)):
            start = time.perf_counter()
            try:
                families = source.collect()
                ok = True
            except Exception as exc:  # noqa: BLE001 - a failed source is a metric, never a failed scrape
                families, ok = [], False
                if source.name not in self._down:
                    log.warning("metrics source %s failed: %s", source.name, exc)
            if ok and source.name in self._down:
                log.info("metrics source %s answers again", source.name)
            (self._down.discard if ok else self._down.add)(source.name)
            if families is None:  # the source does not exist in this deployment
                continue
            up.add_metric([source.name], 1.0 if ok else 0.0)
            took.add_metric([source.name], time.perf_counter() - start)
            yield from families
        yield up
        yield took

    # database -----------------------------------------------------------------------------------
    def _connect(self):
        conn = self.storage.db.engine.connect()
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}")
        return conn

    def _database(self) -> list[Metric]:
        with self._connect() as conn:
            try:
                return [*_experiments_and_tasks(conn), *_outbox(conn), *_training(conn), *_evaluations(conn)]
            finally:
                conn.rollback()

    def _webhooks(self) -> list[Metric] | None:
        with self._connect() as conn:
            try:
                if not self._webhook_tables:
                    self._webhook_tables = inspect(conn).has_table("webhook_deliveries")
                    if not self._webhook_tables:
                        return None
                return _webhook_outcomes(conn)
            finally:
                conn.rollback()

    # broker -------------------------------------------------------------------------------------
    def _queues(self) -> list[Metric] | None:
        depths = self.broker_queues()
        if depths is None:
            return None
        messages = GaugeMetricFamily("resimhub_queue_messages", "Messages in each stage's queue: ready to be "
                                     "consumed, delayed (retries waiting for their backoff) or dead-lettered.",
                                     labels=["queue", "state"])
        consumers = GaugeMetricFamily("resimhub_queue_consumers", "Workers consuming each stage's queue "
                                      "(RabbitMQ only).", labels=["queue"])
        for queue, counts in sorted(depths.items()):
            for state in ("ready", "delayed", "dead"):
                if state in counts:
                    messages.add_metric([queue, state], counts[state])
            if "consumers" in counts:
                consumers.add_metric([queue], counts["consumers"])
        return [messages, consumers]

    def _broker_queues(self) -> dict[str, dict[str, int]] | None:
        settings = self.storage.settings
        if settings.broker_url:
            return rabbitmq_queue_depths(settings.broker_url, settings.queue_prefix)
        return stub_queue_depths(settings.queue_prefix)


def _experiments_and_tasks(conn) -> list[Metric]:
    experiments = GaugeMetricFamily("resimhub_experiments", "Experiments by status.", labels=["status"])
    for status, n in conn.execute(select(Experiment.status, func.count()).group_by(Experiment.status)):
        experiments.add_metric([status], n)
    in_flight = GaugeMetricFamily("resimhub_tasks_in_flight", "Tasks queued or running, by kind.",
                                  labels=["kind", "status"])
    query = (select(Task.kind, Task.status, func.count()).where(Task.status.in_(("queued", "running")))
             .group_by(Task.kind, Task.status))
    for kind, status, n in conn.execute(query):
        in_flight.add_metric([kind, status], n)
    return [experiments, in_flight]


def _outbox(conn) -> list[Metric]:
    pending = conn.scalar(select(func.count()).select_from(EventRecord).where(EventRecord.published_at.is_(None)))
    oldest = conn.scalar(select(EventRecord.time).where(EventRecord.published_at.is_(None))
                         .order_by(EventRecord.seq).limit(1))
    lag = 0.0
    if oldest is not None:
        lag = max(0.0, (utcnow() - oldest).total_seconds())
    return [
        GaugeMetricFamily("resimhub_outbox_pending_events", "Committed events the relay has not yet put on the "
                          "bus (embedded hub: whose consumers have not finished yet).", value=pending or 0),
        GaugeMetricFamily("resimhub_outbox_lag_seconds", "Age of the oldest event the relay has not yet put on "
                          "the bus; 0 when it has published everything.", value=lag),
    ]


def _training(conn) -> list[Metric]:
    runs = GaugeMetricFamily("resimhub_training_runs", "Training runs (one per seed) by status.", labels=["status"])
    for status, n in conn.execute(select(TrainingRun.status, func.count()).group_by(TrainingRun.status)):
        runs.add_metric([status], n)
    steps = conn.scalar(select(func.coalesce(func.sum(TrainingRun.timesteps), 0)))
    done = conn.execute(select(func.count(), func.coalesce(func.sum(TrainingRun.wall_time_s), 0.0))
                        .where(TrainingRun.status == "completed", TrainingRun.wall_time_s.is_not(None))).one()
    recent = (select(TrainingRun.timesteps, TrainingRun.wall_time_s)
              .where(TrainingRun.status == "completed", TrainingRun.wall_time_s > 0)
              .order_by(TrainingRun.id.desc()).limit(RECENT).subquery())
    recent_steps, recent_wall = conn.execute(select(func.sum(recent.c.timesteps), func.sum(recent.c.wall_time_s))).one()
    families = [
        runs,
        CounterMetricFamily("resimhub_training_env_steps", "Environment steps taken by all training runs, as their "
                            "progress reports record them; rate() of it is the cluster's training throughput.",
                            value=steps or 0),
        SummaryMetricFamily("resimhub_training_run_duration_seconds", "Wall time of completed training runs.",
                            count_value=done[0], sum_value=float(done[1])),
    ]
    if recent_wall:
        families.append(GaugeMetricFamily(
            "resimhub_training_env_steps_per_second",
            f"Environment steps per second of the {RECENT} most recently completed training runs.",
            value=float(recent_steps or 0) / float(recent_wall)))
    return families


def _seconds_between(conn, start, end):
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86_400.0


def _evaluations(conn) -> list[Metric]:
    evaluations = GaugeMetricFamily("resimhub_evaluations", "Evaluations by status.", labels=["status"])
    for status, n in conn.execute(select(Evaluation.status, func.count()).group_by(Evaluation.status)):
        evaluations.add_metric([status], n)
    completed = Evaluation.status == "completed"
    episodes = conn.scalar(select(func.coalesce(func.sum(Evaluation.episodes), 0)).where(completed))
    turnaround = _seconds_between(conn, Evaluation.created_at, Evaluation.finished_at)
    count, total = conn.execute(select(func.count(), func.coalesce(func.sum(turnaround), 0.0))
                                .where(completed, Evaluation.finished_at.is_not(None))).one()
    latest = (select(Evaluation.id).where(completed, Evaluation.finished_at.is_not(None))
              .order_by(Evaluation.finished_at.desc()).limit(RECENT).scalar_subquery())
    latency_ms, steps_per_s, wall_s = conn.execute(
        select(func.avg(Evaluation.result["latency_ms"].as_float()),
               func.avg(Evaluation.result["steps_per_second"].as_float()),
               func.avg(Evaluation.result["wall_time_s"].as_float())).where(Evaluation.id.in_(latest))).one()
    families = [
        evaluations,
        CounterMetricFamily("resimhub_evaluation_episodes", "Episodes run by completed evaluations.",
                            value=episodes or 0),
        SummaryMetricFamily("resimhub_evaluation_turnaround_seconds", "Time from an evaluation's request to its "
                            "result, queueing included, over completed evaluations.", count_value=count,
                            sum_value=max(0.0, float(total or 0.0))),
    ]
    recent = f" (mean of the {RECENT} most recently completed evaluations)"
    if latency_ms is not None:
        families.append(GaugeMetricFamily("resimhub_evaluation_policy_latency_seconds",
                                          "Policy time per environment step" + recent, value=latency_ms / 1000.0))
    if steps_per_s is not None:
        families.append(GaugeMetricFamily("resimhub_evaluation_env_steps_per_second",
                                          "Environment steps per second while evaluating" + recent, value=steps_per_s))
    if wall_s is not None:
        families.append(GaugeMetricFamily("resimhub_evaluation_duration_seconds",
                                          "Wall time to run an evaluation's episodes" + recent, value=wall_s))
    return families


# Plain SQL: the webhook tables belong to another part of the hub and may not exist in a deployment.
_ATTEMPT_OUTCOMES = text(
    "SELECT CASE WHEN status_code IS NULL THEN 'error' WHEN status_code < 300 THEN '2xx' "
    "WHEN status_code < 400 THEN '3xx' WHEN status_code < 500 THEN '4xx' ELSE '5xx' END, "
    "COUNT(*), COALESCE(SUM(latency_ms), 0) FROM webhook_attempts GROUP BY 1")


def _webhook_outcomes(conn) -> list[Metric]:
    deliveries = GaugeMetricFamily("resimhub_webhook_deliveries", "Webhook deliveries by status.", labels=["status"])
    for status, n in conn.execute(text("SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status")):
        deliveries.add_metric([status], n)
    attempts = CounterMetricFamily("resimhub_webhook_attempts", "Webhook HTTP attempts by outcome (status class, "
                                   "or error when no response came back).", labels=["outcome"])
    latency = [0, 0.0]
    for name, n, ms in conn.execute(_ATTEMPT_OUTCOMES):
        attempts.add_metric([name], n)
        latency[0] += n
        latency[1] += float(ms) / 1000.0
    duration = SummaryMetricFamily("resimhub_webhook_attempt_duration_seconds", "Time webhook attempts took.",
                                   count_value=latency[0], sum_value=latency[1])
    return [deliveries, attempts, duration]


def rabbitmq_queue_depths(url: str, prefix: str, timeout_s: float = 2.0) -> dict[str, dict[str, int]]:
    """Ready, delayed and dead-lettered counts per stage, from passive declares (which create nothing)."""
    import pika
    from pika.exceptions import ChannelClosedByBroker

    params = pika.URLParameters(url)
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s + 1
    params.blocked_connection_timeout = timeout_s
    params.connection_attempts = 1
    params.retry_delay = 0
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        depths: dict[str, dict[str, int]] = {}
        for stage in QUEUES:
            counts: dict[str, int] = {}
            for state, suffix in (("ready", ""), ("delayed", ".DQ"), ("dead", ".XQ")):
                try:
                    ok = channel.queue_declare(prefix + stage + suffix, passive=True).method
                except ChannelClosedByBroker:  # not declared yet: nobody has used this stage
                    channel = connection.channel()
                    continue
                counts[state] = ok.message_count
                if state == "ready":
                    counts["consumers"] = ok.consumer_count
            if counts:
                depths[stage] = counts
        return depths
    finally:
        connection.close()


def stub_queue_depths(prefix: str) -> dict[str, dict[str, int]] | None:
    """The embedded broker's queues, when this process runs one (``resimhub up``, tests)."""
    import dramatiq.broker
    from dramatiq.brokers.stub import StubBroker

    broker = dramatiq.broker.global_broker
    if not isinstance(broker, StubBroker):
        return None
    depths: dict[str, dict[str, int]] = {}
    for stage in QUEUES:
        name = prefix + stage
        if name not in broker.queues:
            continue
        delayed = broker.queues.get(name + ".DQ")
        depths[stage] = {"ready": broker.queues[name].qsize(), "delayed": delayed.qsize() if delayed else 0,
                         "dead": len(broker.dead_letters_by_queue.get(name, ()))}
    return depths


# -- exposition ---------------------------------------------------------------------------------
class _Forward:
    """Another registry's metrics, without its names being checked against ours at registration."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        yield from self.registry.collect()


def _build_info() -> Metric:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("resimhub")
    except PackageNotFoundError:
        release = "unknown"
    info = GaugeMetricFamily("resimhub_build_info", "Always 1; the version is in the label.", labels=["version"])
    info.add_metric([release], 1.0)
    return info


@dataclass
class MetricsState:
    http: HttpMetrics
    hub: HubCollector

    def exposition(self) -> bytes:
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry)  # every gateway process's HTTP metrics
        else:
            registry.register(_Forward(REGISTRY))  # process_*, python_* of this process
            registry.register(self.http)
        registry.register(self.hub)
        registry.register(_Static([_build_info()]))
        return generate_latest(registry)


class _Static:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return iter(self.metrics)


router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus exposition: HTTP traffic and the hub's state (docs/operations.md lists every metric)."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def install(app, storage: Storage) -> None:
    http = HttpMetrics()
    app.state.metrics = MetricsState(http=http, hub=HubCollector(storage))
    app.include_router(router)
    app.add_middleware(HttpMetricsMiddleware, metrics=http)
