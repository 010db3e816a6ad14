"""End to end on the real services: gateway → PostgreSQL outbox → relay process → RabbitMQ →
``dramatiq`` worker process → PostgreSQL + Redis, read back by a real Celery client."""

import pytest
from sqlalchemy import func, select

from storage.models import ProcessedEvent
from tests.support.cluster import running_cluster
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.cluster




def test_environment_verified_by_a_separate_worker_and_read_by_celery(tmp_path, celery_reader):
    with running_cluster(tmp_path) as cluster:
        r = cluster.client.post("/api/environments", json={"env_name": "CartPole-v1"})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        result = celery_reader.AsyncResult(task_id).get(timeout=90)
        assert result["status"] == "verified"
        assert result["spec"]["observation_space"]["shape"] == [4]
        assert result["spec"]["action_space"]["n"] == 2
        task = cluster.client.get(f"/api/tasks/{task_id}", params={"wait": 10}).json()
        assert task["status"] == "succeeded" and task["result"] == result
        types = [e["type"] for e in cluster.client.get("/api/events").json()["events"]]
        assert types == ["resimhub.environment.registered", "resimhub.environment.verified"]
        ready = cluster.client.get("/ready").json()
        assert ready["ready"] and ready["checks"]["broker"]["kind"] == "rabbitmq"
        assert ready["checks"]["redis"]["kind"] == "redis" and ready["checks"]["database"]["dialect"] == "postgresql"


def test_rejection_reaches_celery_as_a_failure(tmp_path, celery_reader):
    with running_cluster(tmp_path) as cluster:
        task_id = cluster.client.post("/api/environments", json={"env_name": "HalfCheetah-v5"}).json()["task_id"]
        with pytest.raises(ValueError, match=r"\.\[mujoco\]"):
            celery_reader.AsyncResult(task_id).get(timeout=90)
        assert celery_reader.AsyncResult(task_id).state == "FAILURE"


ENV_IDS = ["CartPole-v1", "CartPole-v0", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
           "Pendulum-v1", "FrozenLake-v1", "Taxi-v3", "CliffWalking-v1", "Blackjack-v1"]


def test_broker_outage_loses_nothing_and_handles_nothing_twice(tmp_path):
    """The relay reaches RabbitMQ through a proxy we cut: submissions still succeed, events wait in
    the outbox, and once the broker is back every event is handled exactly once."""
    with running_cluster(tmp_path, relay=False) as cluster:
        proxy = TcpProxy("127.0.0.1", 5672)  # down: nothing listens on its port yet
        cluster.spawn_relay(env={"RESIMHUB_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"})
        import gymnasium

        ids = [i for i in ENV_IDS if i in gymnasium.envs.registry]
        task_ids = []
        for env_id in ids:
            r = cluster.client.post("/api/environments", json={"env_name": env_id})
            assert r.status_code == 202, r.text
            task_ids.append(r.json()["task_id"])
        import time

        time.sleep(3)
        statuses = {cluster.client.get(f"/api/tasks/{t}").json()["status"] for t in task_ids}
        assert statuses == {"queued"}, "work flowed while the broker was unreachable"
        proxy.up()
        try:
            results = [cluster.wait_task(t, timeout=120) for t in task_ids]
        finally:
            proxy.down()
        assert [r["status"] for r in results] == ["succeeded"] * len(ids)
        verified = cluster.client.get("/api/events", params={"type": "resimhub.environment.verified",
                                                             "limit": 100}).json()["events"]
        assert sorted(e["data"]["env_name"] for e in verified) == sorted(ids)
        with cluster.storage.db.session() as session:
            handled = session.scalar(select(func.count()).select_from(ProcessedEvent)
                                     .where(ProcessedEvent.consumer == "verify_environment"))
        assert handled == len(ids)
