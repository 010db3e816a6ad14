"""The benchmark on the real services: upload → PostgreSQL outbox → relay process → RabbitMQ →
``dramatiq`` worker process (validate_model, evaluate) → PostgreSQL + Redis, read by a Celery client."""

from __future__ import annotations

import pytest

from actors.rl.evaluation import evaluate
from actors.rl.modelfiles import load_policy
from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, save_policy
from tests.support.cluster import running_cluster
from tests.support.fixtures import SEED_DQN_MODEL

pytestmark = pytest.mark.cluster

FIXTURE = SEED_DQN_MODEL
ENV = "CartPole-v1"




def test_upload_and_evaluate_through_rabbitmq_workers(tmp_path, celery_reader):
    with running_cluster(tmp_path) as cluster:
        with open(FIXTURE, "rb") as fh:
            r = cluster.client.post("/benchmark/upload_model", files={"file": ("seed.pkl", fh)},
                                    data={"env_name": ENV})
        assert r.status_code == 202, r.text
        model_id = r.json()["model_id"]
        validated = celery_reader.AsyncResult(r.json()["task_id"]).get(timeout=90)
        assert validated["status"] == "validated" and validated["format"] == "torch-zip"

        r = cluster.client.post("/benchmark/run", data={"model_id": model_id, "env_name": ENV, "episodes": "10",
                                                        "seed": "42"})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        result = celery_reader.AsyncResult(task_id).get(timeout=90)
        assert celery_reader.AsyncResult(task_id).state == "SUCCESS"
        expected = evaluate(load_policy(FIXTURE, env_id=ENV).policy, ENV, 10, 42)
        assert result["returns"] == expected.returns and result["total_episodes"] == 10
        assert result["mean_reward"] == expected.mean and result["model_id"] == model_id
        task = cluster.client.get(f"/api/tasks/{task_id}", params={"wait": 10}).json()
        assert task["status"] == "succeeded" and task["result"] == result

        # A second model, so that the PostgreSQL reads of recent and compare are exercised too.
        net = MLP([4, 2], "tanh")
        net.weights[0][:] = 0.0
        net.weights[0][2, 1] = net.weights[0][3, 1] = 1.0
        native = tmp_path / "angle.npz"
        save_policy(MLPPolicy(net, "discrete", (4,)), native, {"env_id": ENV})
        with open(native, "rb") as fh:
            r = cluster.client.post("/api/v1/benchmark/upload_model", files={"file": ("a.npz", fh)},
                                    data={"env_name": ENV})
        angle_id = r.json()["model_id"]
        assert cluster.wait_task(r.json()["task_id"], timeout=90)["status"] == "succeeded"
        r = cluster.client.post("/benchmark/run", json={"model_id": angle_id, "episodes": 10, "seed": 42, "wait": 60})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text

        recent = cluster.client.get("/benchmark/recent", params={"env": ENV}).json()
        assert [e["model_id"] for e in recent] == [angle_id, model_id]
        assert recent[1]["std_reward"] == expected.std and recent[1]["evaluated_at"].endswith("Z")
        ranked = cluster.client.get("/benchmark/compare", params={"model_ids": f"{model_id},{angle_id}"}).json()
        assert [m["model_id"] for m in ranked["models"]] == [angle_id, model_id]
        assert ranked["pairs"][0]["probability_of_improvement"] == 1.0
