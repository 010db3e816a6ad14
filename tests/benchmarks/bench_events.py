"""Events per second through outbox → relay → RabbitMQ → idempotent no-op consumer, and the
commit → actor-start latency, on PostgreSQL; baseline: Dramatiq's raw no-op rate on the same broker.

    .venv/bin/python tests/benchmarks/bench_events.py [--events 10000] [--latency-events 500]

The worker (``dramatiq tests.benchmarks.events_worker``) and the relay run as separate processes,
as in a cluster; the relay is woken by PostgreSQL NOTIFY from this process's commits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from storage import outbox  # noqa: E402
from storage.context import open_storage  # noqa: E402
from storage.events import EnvironmentRegistered  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import EventRecord, ProcessedEvent  # noqa: E402
from storage.settings import load_settings  # noqa: E402

ROUTES = {"resimhub.environment.registered": ["noop_consumer"]}


def relay_main() -> None:
    import dramatiq

    from actors.relay import Relay
    from actors.runtime import boot

    runtime = boot(load_settings())
    prefix = runtime.settings.queue_prefix
    actors = {"noop_consumer": dramatiq.Actor(lambda e: None, broker=runtime.broker, actor_name="noop_consumer",
                                              queue_name=prefix + "bench", priority=0, options={})}
    relay = Relay(runtime.storage, runtime.broker, actors, routes=ROUTES)
    threading.Thread(target=lambda: (sys.stdin.read(), relay.stop()), daemon=True).start()
    relay.run()


def insert_events(storage, n: int, per_tx: int) -> None:
    done = 0
    while done < n:
        with storage.db.session() as session:
            for _ in range(min(per_tx, n - done)):
                outbox.record(session, EnvironmentRegistered(environment_id=done, env_name="bench", task_id="t"))
                done += 1
            session.commit()


def processed(storage) -> int:
    with storage.db.session() as session:
        return session.scalar(select(func.count()).select_from(ProcessedEvent))


def wait_processed(storage, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while processed(storage) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {processed(storage)} of {n} events consumed")
        time.sleep(0.05)


def _report_relay_done(storage, t0: float, n: int) -> None:
    while True:
        with storage.db.session() as session:
            left = session.scalar(select(func.count()).select_from(EventRecord)
                                  .where(EventRecord.published_at.is_(None)))
        if left == 0:
            took = time.perf_counter() - t0
            print(f"  relay alone: {n} events published in {took:.2f}s = {n / took:,.0f} events/s")
            return
        time.sleep(0.02)


def raw_baseline(settings, n: int) -> float:
    """Dramatiq alone: enqueue n messages to a do-nothing actor and time their consumption."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    actor = dramatiq.Actor(lambda n: None, broker=broker, actor_name="raw_noop",
                           queue_name=settings.queue_prefix + "benchraw", priority=0, options={})
    from actors.bus import BatchPublisher

    publisher = BatchPublisher(broker)
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        publisher.publish([actor.message(i) for i in range(start, min(n, start + 500))])
    t_enqueued = time.perf_counter()
    publisher.close()
    queue = settings.queue_prefix + "benchraw"
    # The raw actor does nothing, so consumption is timed by watching the queue empty.
    while True:
        ready, _, _ = broker.get_queue_message_counts(queue)
        if ready == 0:
            break
        time.sleep(0.01)
    t_done = time.perf_counter()
    broker.close()
    print(f"  raw: enqueue {n / (t_enqueued - t0):,.0f} msg/s (batched AMQP transactions), "
          f"consumed by a do-nothing actor at {n / (t_done - t0):,.0f} msg/s end to end")
    return n / (t_done - t0)


def main() -> None:
    if "--relay-only" in sys.argv:
        relay_main()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--latency-events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="events/s in the latency phase")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    args = parser.parse_args()

    from tests.support.services import delete_queues, fresh_postgres_database, rabbitmq_url

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    with fresh_postgres_database() as db_url, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "RESIMHUB_DATABASE_URL": db_url, "RESIMHUB_BROKER_URL": rabbitmq_url(),
               "RESIMHUB_QUEUE_PREFIX": prefix, "RESIMHUB_DATA_DIR": tmp, "RESIMHUB_LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(ROOT)}
        settings = load_settings(env)
        upgrade(settings)
        storage = open_storage(settings)
        worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "tests.benchmarks.events_worker", "-p",
                                   str(args.processes), "-t", str(args.threads), "--queues", prefix + "bench"],
                                  env=env, cwd=ROOT)
        relay = None
        try:
            time.sleep(3)
            print("baseline: Dramatiq alone on the same RabbitMQ")
            # Run the raw consumer in its own worker so the no-op consumer's threads are not shared.
            raw_worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "tests.benchmarks.events_worker", "-p",
                                           str(args.processes), "-t", str(args.threads), "--queues",
                                           prefix + "benchraw"], env=env,
                                          cwd=ROOT)
            time.sleep(3)
            raw_rate = raw_baseline(settings, args.events)
            raw_worker.terminate()
            raw_worker.wait(timeout=30)

            insert_events(storage, args.events, per_tx=100)
            relay = subprocess.Popen([sys.executable, __file__, "--relay-only"], env=env, stdin=subprocess.PIPE)
            t0 = time.perf_counter()
            relayed = threading.Thread(target=_report_relay_done, args=(storage, t0, args.events), daemon=True)
            relayed.start()
            wait_processed(storage, args.events, timeout=600)
            elapsed = time.perf_counter() - t0
            rate = args.events / elapsed
            print(f"outbox → relay → RabbitMQ → idempotent consumer: {args.events} events in {elapsed:.2f}s = "
                  f"{rate:,.0f} events/s ({rate / raw_rate:.2f}× Dramatiq's raw rate)")

            gap = 1.0 / args.rate
            start_count = processed(storage)
            for _ in range(args.latency_events):
                insert_events(storage, 1, per_tx=1)
                time.sleep(gap)
            wait_processed(storage, start_count + args.latency_events, timeout=120)
            with storage.db.session() as session:
                rows = session.execute(
                    select(EventRecord.time, ProcessedEvent.processed_at)
                    .join(ProcessedEvent, ProcessedEvent.event_id == EventRecord.event_id)
                    .order_by(EventRecord.seq.desc()).limit(args.latency_events)).all()
            lat = sorted((p - t).total_seconds() * 1000 for t, p in rows)
            p50 = statistics.median(lat)
            p99 = lat[int(0.99 * (len(lat) - 1))]
            print(f"commit → actor start at {args.rate:.0f} events/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                  f"over {len(lat)} events")
        finally:
            if relay is not None:
                relay.stdin.close()
                relay.wait(timeout=30)
            worker.terminate()
            worker.wait(timeout=30)
            storage.close()
            delete_queues(prefix)
            _delete_extra_queues(prefix)


def _delete_extra_queues(prefix: str) -> None:
    import pika

    from tests.support.services import rabbitmq_url

    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url()))
    ch = conn.channel()
    for q in ("bench", "benchraw"):
        for suffix in ("", ".DQ", ".XQ"):
            ch.queue_delete(prefix + q + suffix)
    conn.close()


if __name__ == "__main__":
    main()
