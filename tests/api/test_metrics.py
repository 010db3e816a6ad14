"""/metrics: names and types that follow Prometheus conventions, HTTP metrics by route template,
domain metrics that move when a real experiment runs, failures reported as metrics, the
multi-process gateway, and (on the machine's RabbitMQ) workers' Dramatiq exporter and queue depths."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.bus import QUEUES as BUS_QUEUES
from api.metrics.hub import HubCollector
from api.metrics.queues import QUEUES
from tests.support.hubs import running_hub, settings_for

ROOT = Path(__file__).resolve().parents[2]
BASE_UNITS = ("_seconds", "_bytes", "_total", "_ratio", "_info")
NOT_BASE_UNITS = re.compile(r"_(milliseconds|ms|minutes|hours|kilobytes|megabytes|percent)(_|$)")


def scrape(client) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families, name, **labels) -> float | None:
    """A sample's value; ``name`` is the sample name (``…_total``, ``…_count``)."""
    family_name = re.sub(r"_(total|count|sum|bucket|created)$", "", name)
    for family in (families.get(family_name), families.get(name)):
        if family is None:
            continue
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_queue_list_matches_the_bus():
    assert QUEUES == BUS_QUEUES


def test_exposition_follows_prometheus_conventions(hub):
    hub.client.get("/api/experiments")
    families = scrape(hub.client)
    ours = {n: f for n, f in families.items() if n.startswith("resimhub_")}
    expected = {
        "resimhub_http_requests": "counter", "resimhub_http_request_duration_seconds": "histogram",
        "resimhub_experiments": "gauge", "resimhub_tasks_in_flight": "gauge", "resimhub_training_runs": "gauge",
        "resimhub_training_env_steps": "counter", "resimhub_training_run_duration_seconds": "summary",
        "resimhub_evaluations": "gauge", "resimhub_evaluation_episodes": "counter",
        "resimhub_evaluation_turnaround_seconds": "summary", "resimhub_outbox_pending_events": "gauge",
        "resimhub_outbox_lag_seconds": "gauge", "resimhub_queue_messages": "gauge",
        "resimhub_queue_consumers": "gauge", "resimhub_webhook_deliveries": "gauge",
        "resimhub_webhook_attempts": "counter", "resimhub_webhook_attempt_duration_seconds": "summary",
        "resimhub_metrics_source_up": "gauge", "resimhub_metrics_source_duration_seconds": "gauge",
        "resimhub_build_info": "gauge",
    }
    assert {n: ours[n].type for n in expected if n in ours} == expected
    for name, family in ours.items():
        assert re.fullmatch(r"resimhub_[a-z0-9_]+", name), name
        assert not NOT_BASE_UNITS.search(name), f"{name}: use base units"
        assert family.documentation, f"{name} has no HELP"
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name == name + "_total", sample.name
            else:
                assert not sample.name.endswith("_total"), f"{sample.name}: _total is for counters"
    assert value(families, "resimhub_http_requests_total", method="GET", route="/api/experiments",
                 status="200") >= 1
    assert {s.labels["source"]: s.value for s in families["resimhub_metrics_source_up"].samples} == {
        "database": 1.0, "webhooks": 1.0, "broker": 1.0}
    assert value(families, "resimhub_outbox_lag_seconds") >= 0
    assert "process_cpu_seconds" in families  # the process collector rides along in single-process mode


def test_http_metrics_are_labelled_by_route_template_never_by_id(tmp_path):
    settings = settings_for(tmp_path, RESIMHUB_AUTH="required")
    with running_hub(settings, worker=False, relay=False) as hub:
        for path in ("/api/experiments/4242", "/api/v1/task_status/abc-123", "/api/v1/experiments/77",
                     "/no/such/path/99", "/api/tasks/t-1/cancel"):
            hub.client.get(path)
        hub.client.delete("/api/experiments/5")  # method not allowed on a known template
        families = scrape(hub.client)
    routes = {(s.labels["route"], s.labels["status"]) for s in families["resimhub_http_requests"].samples
              if s.name.endswith("_total")}
    assert ("/api/experiments/{experiment_id}", "401") in routes  # refused before routing, still templated
    assert ("/api/v1/task_status/{task_id}", "401") in routes
    assert ("/api/v1/experiments/{experiment_id}", "401") in routes
    assert ("unmatched", "401") in routes
    labels = " ".join(r for r, _ in routes)
    assert not re.search(r"4242|abc-123|/77|99|t-1", labels), labels


def test_flask_routes_are_labelled_by_their_rule(hub):
    hub.client.get("/api/v1/task_status/abc")
    hub.client.get("/api/v1/experiments")
    hub.client.post("/api/v1/start_training", json={"experiment_id": 12345})
    families = scrape(hub.client)
    assert value(families, "resimhub_http_requests_total", route="/api/v1/task_status/{task_id}", status="404") == 1
    assert value(families, "resimhub_http_requests_total", route="/api/v1/experiments", status="200") == 1
    assert value(families, "resimhub_http_requests_total", method="POST", route="/api/v1/start_training") == 1
    assert value(families, "resimhub_http_request_duration_seconds_count", route="/api/v1/experiments") == 1


@pytest.mark.slow
def test_metrics_move_after_a_pipeline_run(hub):
    client = hub.client
    before = scrape(client)
    assert value(before, "resimhub_training_env_steps_total") == 0
    assert value(before, "resimhub_experiments", status="completed") is None
    hub.wait_task(client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    exp = client.post("/api/experiments", json={"name": "m", "env_name": "CartPole-v1", "agent": "CEM",
                                                 "total_timesteps": 300_000, "seed": 0, "eval_episodes": 20})
    assert exp.status_code == 201
    task_id = client.post(f"/api/experiments/{exp.json()['id']}/train").json()["task_id"]
    in_flight = None
    deadline = time.monotonic() + 60
    while in_flight is None and time.monotonic() < deadline:
        in_flight = value(scrape(client), "resimhub_tasks_in_flight", kind="train")
    assert in_flight == 1  # queued or running while the worker trains
    task = hub.wait_task(task_id, timeout=300)
    assert task["status"] == "succeeded", task
    deadline = time.monotonic() + 10
    while True:  # the relay publishes the last event (SnapshotWritten) just after the task finishes
        after = scrape(client)
        if value(after, "resimhub_outbox_pending_events") == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert value(after, "resimhub_tasks_in_flight", kind="train") is None  # nothing left in flight
    assert value(after, "resimhub_experiments", status="completed") == 1
    assert value(after, "resimhub_training_runs", status="completed") == 1
    steps = value(after, "resimhub_training_env_steps_total")
    assert steps >= 300_000 > value(before, "resimhub_training_env_steps_total")
    assert value(after, "resimhub_training_run_duration_seconds_count") == 1
    assert value(after, "resimhub_training_run_duration_seconds_sum") > 0
    assert value(after, "resimhub_training_env_steps_per_second") > 1000
    assert value(after, "resimhub_evaluation_episodes_total") == 20
    assert value(after, "resimhub_evaluations", status="completed") == 1
    assert value(after, "resimhub_evaluation_turnaround_seconds_count") == 1
    assert value(after, "resimhub_evaluation_turnaround_seconds_sum") > 0
    assert 0 < value(after, "resimhub_evaluation_policy_latency_seconds") < 1
    assert value(after, "resimhub_evaluation_env_steps_per_second") > 0
    assert value(after, "resimhub_evaluation_duration_seconds") > 0
    assert value(after, "resimhub_outbox_pending_events") == 0 and value(after, "resimhub_outbox_lag_seconds") == 0
    assert value(after, "resimhub_queue_messages", queue="training", state="ready") == 0
    assert value(after, "resimhub_webhook_deliveries") is None  # no subscriptions, no deliveries
    assert value(after, "resimhub_http_requests_total", method="POST", route="/api/experiments/{experiment_id}/train",
                 status="202") == 1
    polls = value(after, "resimhub_http_request_duration_seconds_count", method="GET", route="/api/tasks/{task_id}")
    assert polls >= 1
    assert value(after, "resimhub_http_requests_total", method="GET", route="/metrics", status="200") >= 2


def test_the_outbox_lag_is_the_age_of_the_oldest_unpublished_event(tmp_path):
    with running_hub(settings_for(tmp_path), worker=False, relay=False) as hub:
        assert value(scrape(hub.client), "resimhub_outbox_lag_seconds") == 0
        hub.client.post("/api/environments", json={"env_name": "CartPole-v1"})
        time.sleep(0.3)
        families = scrape(hub.client)
        assert value(families, "resimhub_outbox_pending_events") == 1
        assert 0.3 <= value(families, "resimhub_outbox_lag_seconds") < 30
        assert value(families, "resimhub_tasks_in_flight", kind="verify_environment", status="queued") == 1


def test_a_failing_source_is_reported_as_a_metric_not_a_failed_scrape(hub):
    def broker_down():
        raise ConnectionError("broker unreachable")

    hub.client.app.state.metrics.hub.broker_queues = broker_down
    families = scrape(hub.client)
    up = {s.labels["source"]: s.value for s in families["resimhub_metrics_source_up"].samples}
    assert up == {"database": 1.0, "webhooks": 1.0, "broker": 0.0}
    assert "resimhub_experiments" in families and "resimhub_queue_messages" not in families

    from sqlalchemy import create_engine

    dead = SimpleNamespace(db=SimpleNamespace(engine=create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/x")),
                           settings=hub.settings)
    start = time.monotonic()
    metrics = list(HubCollector(dead, broker_queues=lambda: None).collect())
    assert time.monotonic() - start < 10
    up = {s.labels["source"]: s.value for m in metrics if m.name == "resimhub_metrics_source_up" for s in m.samples}
    assert up == {"database": 0.0, "webhooks": 0.0}


def test_rabbitmq_queue_depths_against_an_unreachable_broker_fail_fast(hub):
    from api.metrics.queues import rabbitmq_queue_depths

    start = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - any connection error; the collector turns it into a metric
        rabbitmq_queue_depths("amqp://guest:guest@127.0.0.1:1/%2F", "", timeout_s=1)
    assert time.monotonic() - start < 5


_MULTIPROCESS_CHILD = """
import sys
from api.metrics.http import HttpMetrics
HttpMetrics().observe("GET", "/api/experiments", 200, 0.01)
"""
_MULTIPROCESS_SCRAPE = """
from api.metrics.exposition import MetricsState
from api.metrics.http import HttpMetrics
class NoHub:
    def describe(self): return []
    def collect(self): return iter(())
print(MetricsState(http=HttpMetrics(), hub=NoHub()).exposition().decode())
"""


def test_gateway_processes_add_up_in_multiprocess_mode(tmp_path):
    """What ``resimhub api --workers N`` relies on: any process reports every process's requests."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(3):
        subprocess.run([sys.executable, "-c", _MULTIPROCESS_CHILD], cwd=ROOT, env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", _MULTIPROCESS_SCRAPE], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    families = {f.name: f for f in text_string_to_metric_families(out)}
    assert value(families, "resimhub_http_requests_total", route="/api/experiments", status="200") == 3
    assert value(families, "resimhub_http_request_duration_seconds_count", route="/api/experiments") == 3


# -- cluster: workers' own exporter and RabbitMQ queue depths ----------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cluster
def test_workers_export_dramatiq_metrics_and_the_gateway_reports_rabbitmq_queues(tmp_path):
    from tests.support.cluster import running_cluster

    port = _free_port()
    with running_cluster(tmp_path, workers=0) as cluster:
        worker = cluster.spawn("-m", "dramatiq", "actors.worker", "--processes", "1", "--threads", "2",
                               env={"RESIMHUB_WORKER_METRICS": "1", "dramatiq_prom_port": str(port),
                                    "dramatiq_prom_host": "127.0.0.1",
                                    "dramatiq_prom_db": str(tmp_path / "prom")})
        task = cluster.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"]
        assert cluster.wait_task(task, timeout=60)["status"] == "succeeded"
        deadline = time.monotonic() + 30
        families = {}
        while time.monotonic() < deadline:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
                families = {f.name: f for f in text_string_to_metric_families(text)}
                if value(families, "dramatiq_messages_total", actor_name="verify_environment"):
                    break
            except httpx.HTTPError:
                assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        assert value(families, "dramatiq_messages_total", actor_name="verify_environment",
                     queue_name=cluster.settings.queue_prefix + "environments") >= 1
        assert families["dramatiq_message_duration_milliseconds"].type == "histogram"

        gateway = scrape(cluster.client)
        up = {s.labels["source"]: s.value for s in gateway["resimhub_metrics_source_up"].samples}
        assert up["broker"] == 1.0 and up["database"] == 1.0
        assert value(gateway, "resimhub_queue_messages", queue="environments", state="ready") == 0
        assert value(gateway, "resimhub_queue_consumers", queue="environments") >= 1
        assert value(gateway, "resimhub_queue_consumers", queue="training") >= 1
