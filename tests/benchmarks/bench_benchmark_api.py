"""How long from ``POST /benchmark/run`` to the result, and how many evaluations per second?

A script, not a test:

    .venv/bin/python tests/benchmarks/bench_benchmark_api.py [--submissions 200] [--episodes 10]

The model is the seed fixture (a 4-64-64-2 CartPole Q-network, ~9 steps per episode), so an
evaluation itself costs a few milliseconds and the figures measure the pipeline around it: the
request and its transaction, the outbox relay, the bus, the worker, the result write and the way
the client learns about it.

* **embedded**: one process (SQLite, in-process broker, 2 worker threads, relay thread), requests
  through the in-process ASGI test client; the client learns the result with ``?wait=60``.
* **cluster**: PostgreSQL, RabbitMQ, Redis, a relay process and 2 ``dramatiq`` worker processes
  (1 process × 2 threads each); measured once with ``?wait=60`` (the gateway polls the database)
  and once with a plain 202 followed by a Celery ``AsyncResult.get()`` (Redis pub/sub push).

Latency submissions are sequential (one in flight), so they show the pipeline's floor; throughput
submits a batch at once and times until every evaluation is completed. Timings depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import func, select  # noqa: E402

from actors.relay import Relay  # noqa: E402
from storage.models import Task  # noqa: E402
from tests.support.cluster import running_cluster  # noqa: E402
from tests.support.fixtures import SEED_DQN_MODEL
from tests.support.hubs import running_hub, settings_for  # noqa: E402

FIXTURE = SEED_DQN_MODEL
ENV = "CartPole-v1"


def upload(hub) -> str:
    with open(FIXTURE, "rb") as fh:
        r = hub.client.post("/benchmark/upload_model", files={"file": ("seed.pkl", fh)}, data={"env_name": ENV})
    r.raise_for_status()
    task = hub.wait_task(r.json()["task_id"], timeout=120)
    if task["status"] != "succeeded":
        raise RuntimeError(f"the fixture did not validate: {task}")
    return r.json()["model_id"]


def run_body(model_id: str, episodes: int, seed: int) -> dict:
    return {"model_id": model_id, "env_name": ENV, "episodes": episodes, "seed": seed}


def latency_wait(hub, model_id: str, n: int, episodes: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        r = hub.client.post("/benchmark/run", json={**run_body(model_id, episodes, i), "wait": 60})
        elapsed = time.perf_counter() - t0
        if r.status_code != 200 or r.json()["status"] != "succeeded":
            raise RuntimeError(f"submission {i} did not finish inline: {r.status_code} {r.text[:300]}")
        out.append(elapsed)
    return out


def latency_celery(hub, celery, model_id: str, n: int, episodes: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        r = hub.client.post("/benchmark/run", json=run_body(model_id, episodes, i))
        if r.status_code != 202:
            raise RuntimeError(f"submission {i}: {r.status_code} {r.text[:300]}")
        result = celery.AsyncResult(r.json()["task_id"]).get(timeout=60)
        out.append(time.perf_counter() - t0)
        if result["total_episodes"] != episodes:
            raise RuntimeError(f"submission {i} returned {result['total_episodes']} episodes")
    return out


def submit_batch(hub, model_id: str, n: int, episodes: int) -> list[str]:
    task_ids = []
    for i in range(n):
        r = hub.client.post("/benchmark/run", json=run_body(model_id, episodes, 10_000 + i))
        if r.status_code != 202:
            raise RuntimeError(f"submission {i}: {r.status_code} {r.text[:300]}")
        task_ids.append(r.json()["task_id"])
    return task_ids


def wait_all(hub, task_ids: list[str]) -> tuple[float, float]:
    """Block until every task is finished; returns (first started_at, last finished_at) as epoch
    seconds, read from the task rows the workers wrote."""
    db = hub.storage.db
    deadline = time.monotonic() + 600
    while True:
        with db.session() as session:
            done = session.scalar(select(func.count()).select_from(Task).where(
                Task.id.in_(task_ids), Task.status.in_(("succeeded", "failed"))))
            if done == len(task_ids):
                failed = session.scalar(select(func.count()).select_from(Task).where(
                    Task.id.in_(task_ids), Task.status == "failed"))
                first, last = session.execute(select(func.min(Task.started_at), func.max(Task.finished_at)).where(
                    Task.id.in_(task_ids))).one()
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done}/{len(task_ids)} evaluations finished in 600 s")
        time.sleep(0.02)
    if failed:
        raise RuntimeError(f"{failed} evaluations failed")
    return _epoch(first), _epoch(last)


def _epoch(moment) -> float:
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def burst(hub, model_id: str, n: int, episodes: int) -> tuple[float, float]:
    """``n`` submissions back to back while workers run: evaluations per second from the first
    request to the last result, and the share of that time the client spent submitting."""
    t0 = time.perf_counter()
    task_ids = submit_batch(hub, model_id, n, episodes)
    submitted = time.perf_counter() - t0
    wait_all(hub, task_ids)
    wall = time.perf_counter() - t0
    return n / wall, submitted / wall


def drain(hub, model_id: str, n: int, episodes: int, start_relay) -> float:
    """``n`` evaluations already waiting in the outbox when a relay starts (the hub's own relay has
    been stopped, its workers are warm): evaluations per second from the first task a worker
    started to the last one finished, so neither the submissions nor the relay's start-up count."""
    task_ids = submit_batch(hub, model_id, n, episodes)
    start_relay()
    first, last = wait_all(hub, task_ids)
    return n / (last - first)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k] * 1000.0


def row(name: str, values: list[float]) -> dict:
    return {"config": name, "n": len(values), "p50_ms": pct(values, 50), "p99_ms": pct(values, 99),
            "mean_ms": statistics.fmean(values) * 1000.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=200, help="sequential submissions per latency row")
    parser.add_argument("--throughput", type=int, default=200, help="evaluations per throughput batch")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    rows, rates = [], []

    with tempfile.TemporaryDirectory() as tmp, running_hub(settings_for(Path(tmp))) as hub:
        model_id = upload(hub)
        latency_wait(hub, model_id, args.warmup, args.episodes)
        rows.append(row("embedded, ?wait", latency_wait(hub, model_id, args.submissions, args.episodes)))
        rate, share = burst(hub, model_id, args.throughput, args.episodes)
        hub.relay.stop()
        relay = Relay(hub.storage, hub.runtime.broker, hub.runtime.actors)
        thread = threading.Thread(target=relay.run, daemon=True)
        try:
            drained = drain(hub, model_id, args.throughput, args.episodes, thread.start)
        finally:
            relay.stop()
            thread.join(timeout=5)
        rates.append(("embedded, 2 worker threads", rate, share, drained))

    if not args.skip_cluster:
        from celery import Celery

        from tests.support.services import redis_url

        celery = Celery("bench", backend=redis_url(), broker="memory://")
        with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp), workers=2) as cluster:
            model_id = upload(cluster)
            latency_wait(cluster, model_id, args.warmup, args.episodes)
            latency_celery(cluster, celery, model_id, args.warmup, args.episodes)
            rows.append(row("cluster, ?wait", latency_wait(cluster, model_id, args.submissions, args.episodes)))
            rows.append(row("cluster, 202 + Celery get",
                            latency_celery(cluster, celery, model_id, args.submissions, args.episodes)))
            rate, share = burst(cluster, model_id, args.throughput, args.episodes)
            (relay_proc,) = [p for p in cluster.processes if "relay" in p.args]
            os.killpg(relay_proc.pid, signal.SIGTERM)
            relay_proc.wait(timeout=15)
            drained = drain(cluster, model_id, args.throughput, args.episodes, cluster.spawn_relay)
            rates.append(("cluster, 2 worker processes", rate, share, drained))
        celery.close()

    print(f"{platform.machine()} {platform.python_version()}, {args.episodes}-episode {ENV} evaluations of the "
          f"seed fixture, {args.submissions} sequential submissions per row")
    print(f"{'submit -> result':<30}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for r in rows:
        print(f"{r['config']:<30}{r['n']:>6}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['mean_ms']:>10.1f}")
    print(f"\n{'throughput, ' + str(args.throughput) + ' evaluations':<30}{'burst/s':>10}{'submitting':>12}"
          f"{'backlog/s':>11}")
    for name, rate, share, drained in rates:
        print(f"{name:<30}{rate:>10.1f}{share:>12.0%}{drained:>11.1f}")
    print("burst: submitted back to back while workers run (client-bound when 'submitting' is high); "
          "backlog: queued first, then drained by relay + workers")


if __name__ == "__main__":
    main()
