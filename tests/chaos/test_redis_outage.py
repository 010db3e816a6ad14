"""Redis down: polling answers from the database meanwhile, and the Celery channel catches up.

Every process of the hub (gateway, relay, workers) reaches Redis through a proxy we cut. Tasks are
submitted and finish during the outage; their Celery documents cannot be written then. Once Redis
is back, each process rewrites the tasks it missed from their database rows, so a stock Celery
client sees the final state without anything else having to happen.
"""

import json
import time

import pytest
import redis
from celery import Celery

from storage import tasks
from storage.context import open_storage
from storage.migrate import upgrade
from storage.result_channel import KEY_PREFIX
from tests.chaos.common import register_cartpole, submit_training
from tests.support.cluster import running_cluster
from tests.support.hubs import settings_for
from tests.support.services import REDIS_HOSTPORT, redis_url
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DB = 11


@pytest.fixture
def direct_redis():
    client = redis.Redis.from_url(redis_url(DB))
    yield client
    client.close()


@pytest.fixture
def celery_reader():
    app = Celery("reader", backend=redis_url(DB), broker="memory://")
    yield app
    app.close()


def _doc(client, task_id: str) -> dict | None:
    raw = client.get(KEY_PREFIX + task_id)
    return json.loads(raw) if raw else None


def test_polling_falls_back_to_the_database_and_celery_catches_up(tmp_path, direct_redis, celery_reader):
    proxy = TcpProxy(*REDIS_HOSTPORT).up()
    env = {"RESIMHUB_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{DB}"}
    try:
        with running_cluster(tmp_path, workers=1, env=env) as cluster:
            register_cartpole(cluster)
            _exp, before = submit_training(cluster.client, "before", total_timesteps=2000, eval_episodes=3)
            assert celery_reader.AsyncResult(before).get(timeout=60)["statistics_over"]

            proxy.down()
            task_ids = [submit_training(cluster.client, f"during-{i}", total_timesteps=2000, seed=i,
                                        eval_episodes=3)[1] for i in range(5)]
            for task_id in task_ids:
                task = cluster.wait_task(task_id, timeout=90)  # GET /api/tasks/…: the database answers
                assert task["status"] == "succeeded", task
                legacy = cluster.client.get(f"/api/v1/task_status/{task_id}")
                assert legacy.status_code == 200 and legacy.json()["status"] == "succeeded"
                assert _doc(direct_redis, task_id) is None, "written to Redis although Redis was unreachable"
            ready = cluster.client.get("/ready").json()
            assert ready["checks"]["redis"]["ok"] is False and ready["checks"]["database"]["ok"] is True
            assert cluster.storage.channel.missed >= len(task_ids)  # the gateway's own misses: the creations

            proxy.up()
            # Every process catches up on its own schedule (a backoff of up to 5 s since its first
            # miss): the documents turn SUCCESS through the worker's catch-up, the gateway's misses
            # go through its own, which may come a backoff later. Wait for both, not for the first.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                docs = [_doc(direct_redis, t) for t in task_ids]
                if all(d and d["status"] == "SUCCESS" for d in docs) and cluster.storage.channel.missed == 0:
                    break
                time.sleep(0.2)
            for task_id in task_ids:
                result = celery_reader.AsyncResult(task_id).get(timeout=10)
                assert result == cluster.client.get(f"/api/tasks/{task_id}").json()["result"]
            assert cluster.storage.channel.missed == 0
    finally:
        proxy.down()


def test_a_late_catch_up_never_takes_a_finished_task_back(tmp_path, direct_redis):
    """The catch-up reads a row and writes it; meanwhile another process may have written a newer,
    final state. A stale non-final document must then lose, while a final one always wins."""
    proxy = TcpProxy(*REDIS_HOSTPORT).up()
    settings = settings_for(tmp_path, RESIMHUB_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/{DB}")
    upgrade(settings)
    storage = open_storage(settings)
    storage.channel.retry_interval = 3600  # drive the catch-up by hand
    try:
        with storage.db.session() as session:
            task = tasks.create(session, "chaos")
            session.commit()
        task_id = task.id
        proxy.down()
        with storage.db.session() as session:
            tasks.mark_running(session, tasks.get(session, task_id))
            session.commit()
        assert storage.channel.missed == 1 and _doc(direct_redis, task_id)["status"] == "PENDING"
        # Another process finished the task and its write went through (simulated on the real Redis).
        final = {"status": "SUCCESS", "result": {"done": True}, "traceback": None, "children": [],
                 "date_done": "2026-11-25T00:00:00Z", "task_id": task_id}
        direct_redis.set(KEY_PREFIX + task_id, json.dumps(final))
        proxy.up()
        assert storage.channel.catch_up() == 1
        assert _doc(direct_redis, task_id) == final, "a stale STARTED overwrote SUCCESS"
        assert storage.channel.missed == 0

        # And the other way round: the row is final, the key is stale → the catch-up fixes the key.
        proxy.down()
        with storage.db.session() as session:
            tasks.succeed(session, tasks.get(session, task_id), {"mean": 1.0})
            session.commit()
        direct_redis.set(KEY_PREFIX + task_id, json.dumps({**final, "status": "STARTED", "result": None}))
        proxy.up()
        assert storage.channel.catch_up() == 1
        doc = _doc(direct_redis, task_id)
        assert doc["status"] == "SUCCESS" and doc["result"] == {"mean": 1.0}
        assert direct_redis.ttl(KEY_PREFIX + task_id) > 0
    finally:
        proxy.down()
        storage.close()
