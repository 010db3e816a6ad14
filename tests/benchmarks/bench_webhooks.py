"""Webhook deliveries per second to a fast loopback receiver, and event commit → delivered latency,
on PostgreSQL + RabbitMQ with the relay and the workers in their own processes, as in a cluster.
Baseline in the same run: plain keep-alive httpx POSTs of the same body from as many processes and
threads as the workers have, to the same receiver.

    .venv/bin/python tests/benchmarks/bench_webhooks.py [--events 3000] [--latency-events 300] [--rate 50]
        [--processes 2] [--threads 4]

The receiver is a separate process (http.server, HTTP/1.1 keep-alive) that answers 200 at once.
Latency is taken from the database: the event's time (stamped when it was recorded, just before its
transaction committed) to the end of the successful attempt (attempt start + its latency).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from storage import outbox  # noqa: E402
from storage.context import open_storage  # noqa: E402
from storage.events import ExperimentCreated  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import EventRecord, WebhookAttempt, WebhookDelivery  # noqa: E402
from storage.settings import load_settings  # noqa: E402


def receiver_main(port: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes; do not wait for an ACK between

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _baseline_process(url: str, threads: int, per_thread: int, body: bytes, out) -> None:
    import httpx

    def run() -> None:
        with httpx.Client(trust_env=False) as client:
            for _ in range(per_thread):
                client.post(url, content=body, headers={"content-type": "application/json"}).raise_for_status()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(threads * per_thread)


def raw_baseline(url: str, processes: int, threads: int, n: int, body: bytes) -> float:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    per_thread = max(1, n // (processes * threads))
    procs = [ctx.Process(target=_baseline_process, args=(url, threads, per_thread, body, out))
             for _ in range(processes)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    done = sum(out.get() for _ in procs)
    took = time.perf_counter() - t0
    for p in procs:
        p.join()
    rate = done / took
    print(f"  baseline: {done} plain httpx POSTs from {processes}×{threads} keep-alive clients in {took:.2f}s = "
          f"{rate:,.0f} req/s (includes starting the processes)")
    return rate


def emit(storage, n: int, per_tx: int = 100) -> None:
    done = 0
    while done < n:
        with storage.db.session() as session:
            for _ in range(min(per_tx, n - done)):
                outbox.record(session, ExperimentCreated(experiment_id=done, name=f"bench{done}",
                                                         env_name="CartPole-v1", agent="PPO", seeds=[0]))
                done += 1
            session.commit()


def delivered(storage) -> int:
    with storage.db.session() as session:
        return session.scalar(select(func.count()).select_from(WebhookDelivery)
                              .where(WebhookDelivery.status == "delivered"))


def wait_delivered(storage, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (count := delivered(storage)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count} of {n} deliveries made")
        time.sleep(0.05)


def latencies_ms(storage, last: int) -> list[float]:
    with storage.db.session() as session:
        rows = session.execute(
            select(EventRecord.time, WebhookAttempt.started_at, WebhookAttempt.latency_ms)
            .join(WebhookDelivery, WebhookDelivery.event_id == EventRecord.event_id)
            .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
            .where(WebhookAttempt.status_code == 200)
            .order_by(EventRecord.seq.desc()).limit(last)).all()
    return sorted(((started + timedelta(milliseconds=lat)) - t).total_seconds() * 1000 for t, started, lat in rows)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        receiver_main(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--latency-events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="events/s in the latency phase")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    args = parser.parse_args()

    from tests.support.services import delete_queues, fresh_postgres_database, rabbitmq_url

    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)], stdout=subprocess.PIPE,
                                text=True)
    assert receiver.stdout.readline().strip() == "ready"
    prefix = f"benchwh{uuid.uuid4().hex[:8]}."
    procs: list[subprocess.Popen] = []
    try:
        with fresh_postgres_database() as db_url, tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "RESIMHUB_DATABASE_URL": db_url, "RESIMHUB_BROKER_URL": rabbitmq_url(),
                   "RESIMHUB_QUEUE_PREFIX": prefix, "RESIMHUB_DATA_DIR": tmp, "RESIMHUB_LOG_LEVEL": "WARNING",
                   "RESIMHUB_WEBHOOK_ALLOW_PRIVATE": "1", "PYTHONPATH": str(ROOT)}
            settings = load_settings(env)
            upgrade(settings)
            storage = open_storage(settings)
            try:
                body = b'{"specversion":"1.0","data":{"experiment_id":1}}' + b" " * 300
                print(f"webhooks on PostgreSQL + RabbitMQ, {args.processes} worker processes × {args.threads} threads")
                raw_rate = raw_baseline(url, args.processes, args.threads, args.events, body)

                with storage.db.session() as session:
                    from api.services import webhooks as service

                    service.create(session, settings, url=url, event_types=["resimhub.experiment.created"],
                                   description="bench", pause_after_failures=5)
                procs.append(subprocess.Popen([sys.executable, "-m", "dramatiq", "actors.worker", "-p",
                                               str(args.processes), "-t", str(args.threads), "--queues",
                                               prefix + "webhooks"], env=env, cwd=ROOT))
                time.sleep(3)
                emit(storage, args.events)
                t0 = time.perf_counter()
                procs.append(subprocess.Popen([sys.executable, "-m", "api.cli", "relay"], env=env, cwd=ROOT))
                wait_delivered(storage, args.events, timeout=600)
                took = time.perf_counter() - t0
                rate = args.events / took
                print(f"  hub: {args.events} events → relay → fan-out → signed delivery in {took:.2f}s = "
                      f"{rate:,.0f} deliveries/s ({rate / raw_rate:.2f}× the plain POST rate; includes starting "
                      f"the relay)")

                gap = 1.0 / args.rate
                for _ in range(args.latency_events):
                    emit(storage, 1, per_tx=1)
                    time.sleep(gap)
                wait_delivered(storage, args.events + args.latency_events, timeout=120)
                lat = latencies_ms(storage, args.latency_events)
                p50 = statistics.median(lat)
                p99 = lat[int(0.99 * (len(lat) - 1))]
                print(f"  commit → delivered at {args.rate:.0f} events/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                      f"over {len(lat)} events")
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(timeout=30)
                storage.close()
                delete_queues(prefix)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    main()
