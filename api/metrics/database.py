"""The hub's state as the database knows it, computed when Prometheus scrapes.

The database is the one place that knows about every worker's progress, so any gateway process
answers for the whole cluster and nothing is lost when a worker restarts. Every query is an indexed
or small aggregate, run under a statement timeout on PostgreSQL.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from sqlalchemy import func, inspect, select, text

from storage.context import Storage
from storage.models import Evaluation, EventRecord, Experiment, Task, TrainingRun, utcnow

#: Statement timeout for the scrape's queries on PostgreSQL.
QUERY_TIMEOUT_MS = 2_000
#: How many of the most recent finished runs / evaluations the throughput gauges average over.
RECENT = 20


def _connect(storage: Storage):
    conn = storage.db.engine.connect()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}")
    return conn


def hub_state(storage: Storage) -> list[Metric]:
    """Experiments, tasks in flight, the outbox, training and evaluations."""
    with _connect(storage) as conn:
        try:
            return [*_experiments_and_tasks(conn), *_outbox(conn), *_training(conn), *_evaluations(conn)]
        finally:
            conn.rollback()


class WebhookState:
    """Webhook deliveries and attempts. Plain SQL, and ``None`` (no such source) until the tables
    exist: they belong to another part of the hub and a deployment may not have them yet."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._tables = False

    def __call__(self) -> list[Metric] | None:
        with _connect(self.storage) as conn:
            try:
                if not self._tables:
                    self._tables = inspect(conn).has_table("webhook_deliveries")
                    if not self._tables:
                        return None
                return _webhook_outcomes(conn)
            finally:
                conn.rollback()


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
