"""Webhooks on the real services: PostgreSQL outbox → relay process → RabbitMQ → ``dramatiq`` worker
processes (fan-out, delivery, retries as RabbitMQ delayed messages) → a receiver in this process."""

import time

import pytest

from storage import outbox
from storage.events import ExperimentCreated
from tests.support.cluster import running_cluster
from tests.support.receiver import Receiver, Reply, settings_env, wait_deliveries

pytestmark = pytest.mark.cluster


def test_pipeline_events_retries_ping_and_redelivery_on_rabbitmq(tmp_path):
    with Receiver() as receiver, running_cluster(tmp_path, env=settings_env()) as cluster:
        receiver.script = [Reply(500), Reply(503, headers={"Retry-After": "1"})]
        r = cluster.client.post("/api/webhooks", json={"url": receiver.url, "event_types": ["resimhub.environment.*"]})
        assert r.status_code == 201, r.text
        sub = r.json()
        receiver.secrets.append(sub["secret"])
        task_id = cluster.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"]
        assert cluster.wait_task(task_id, timeout=90)["status"] == "succeeded"
        found = wait_deliveries(cluster.client, sub["id"], count=2, timeout=60)
        assert [d["status"] for d in found] == ["delivered", "delivered"]
        assert sorted(d["attempt_count"] for d in found) in ([1, 3], [2, 2])
        got = receiver.wait_for(4)
        assert all(g.verified[sub["secret"]] for g in got)
        assert {g.json()["type"] for g in got} == {"resimhub.environment.registered", "resimhub.environment.verified"}
        assert {g.webhook_id for g in got} == {d["message_id"] for d in found}

        ping = cluster.client.post(f"/api/webhooks/{sub['id']}/test")
        assert ping.status_code == 202
        assert receiver.wait_for(5)[-1].json()["type"] == "resimhub.webhook.pinged"

        first = found[-1]
        assert cluster.client.post(f"/api/webhooks/{sub['id']}/deliveries/{first['id']}/redeliver").status_code == 202
        again = receiver.wait_for(6)[-1]
        assert again.webhook_id == first["message_id"] and again.verified[sub["secret"]]


def test_many_events_over_two_workers_are_each_delivered_once(tmp_path):
    n = 60
    with Receiver() as receiver, running_cluster(tmp_path, workers=2, env=settings_env()) as cluster:
        sub = cluster.client.post("/api/webhooks", json={"url": receiver.url,
                                                         "event_types": ["resimhub.experiment.created"]}).json()
        receiver.secrets.append(sub["secret"])
        receiver.script = [Reply(500)] * 10  # some first attempts fail and are retried
        with cluster.storage.db.session() as session:
            for i in range(n):
                outbox.record(session, ExperimentCreated(experiment_id=i, name=f"e{i}", env_name="CartPole-v1",
                                                         agent="PPO", seeds=[0]))
            session.commit()
        found = wait_deliveries(cluster.client, sub["id"], count=n, timeout=90)
        assert {d["status"] for d in found} == {"delivered"}
        time.sleep(0.5)
        ok = [g for g in receiver.received if g.verified[sub["secret"]]]
        assert len(ok) == len(receiver.received) == n + 10
        assert len({g.webhook_id for g in ok}) == n
        assert sum(d["attempt_count"] for d in found) == n + 10
