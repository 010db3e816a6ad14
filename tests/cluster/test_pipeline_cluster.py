"""The training pipeline on PostgreSQL + RabbitMQ + Redis with separate ``dramatiq`` worker processes."""

import os
import signal
import time

import pytest
from sqlalchemy import func, select

from storage.models import EventRecord, Model, TrainingRun
from tests.support.cluster import running_cluster

pytestmark = pytest.mark.cluster




def _cartpole_experiment(cluster, **fields) -> int:
    cluster.wait_task(cluster.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"],
                      timeout=60)
    r = cluster.client.post("/api/experiments", json={"name": "c", "env_name": "CartPole-v1", **fields})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _run(cluster, task_id) -> TrainingRun:
    with cluster.storage.db.session() as session:
        return session.scalars(select(TrainingRun).where(TrainingRun.task_id == task_id)).one()


@pytest.mark.slow
def test_multi_seed_experiment_spread_over_workers(tmp_path, celery_reader):
    with running_cluster(tmp_path, workers=2) as cluster:
        exp_id = _cartpole_experiment(cluster, agent="CEM", total_timesteps=300_000, seeds=[0, 1, 2])
        task_id = cluster.client.post(f"/api/experiments/{exp_id}/train").json()["task_id"]
        result = celery_reader.AsyncResult(task_id).get(timeout=240)
        assert result["statistics_over"] == "seeds" and result["seeds"] == [0, 1, 2]
        assert len(result["final_returns"]) == 3 and result["mean_return"] >= 475
        assert result["ci95"][0] <= result["iqm"] <= result["ci95"][1]
        assert len({r["model_id"] for r in result["runs"]}) == 3
        exp = cluster.client.get(f"/api/experiments/{exp_id}").json()
        assert exp["status"] == "completed" and exp["results"]["mean_return"] == result["mean_return"]
        legacy = cluster.client.get(f"/api/v1/task_status/{task_id}").json()
        assert legacy["status"] == "succeeded"


def test_a_corrupt_checkpoint_fails_the_run_and_celery_sees_a_failure(tmp_path, celery_reader):
    """Workers are started only after the run's checkpoint has been damaged on the shared volume, so
    the failure is deterministic: the run fails once, is not retried, and Celery rebuilds the error."""
    with running_cluster(tmp_path, workers=0) as cluster:
        exp_id = _cartpole_experiment_without_workers(cluster)
        task_id = cluster.client.post(f"/api/experiments/{exp_id}/train").json()["task_id"]
        run = _run(cluster, task_id)
        checkpoint = cluster.settings.artifacts_dir / "checkpoints" / f"run-{run.id}.npz"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"this is not a checkpoint")
        cluster.spawn_worker()
        with pytest.raises(Exception, match="RLError: cannot read checkpoint"):
            celery_reader.AsyncResult(task_id).get(timeout=120)
        assert celery_reader.AsyncResult(task_id).state == "FAILURE"
        task = cluster.client.get(f"/api/tasks/{task_id}").json()
        assert task["status"] == "failed" and task["error"]["code"] == "training_failed"
        assert cluster.client.get(f"/api/experiments/{exp_id}").json()["status"] == "failed"
        assert _run(cluster, task_id).attempts == 1


def _cartpole_experiment_without_workers(cluster) -> int:
    """Register CartPole through a short-lived worker, then leave no worker running."""
    worker = cluster.spawn_worker()
    exp_id = _cartpole_experiment(cluster, agent="PPO", total_timesteps=20_000, seed=0)
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=30)
    return exp_id


@pytest.mark.slow
def test_kill_9_mid_training_resumes_from_checkpoint_and_completes_once(tmp_path):
    with running_cluster(tmp_path, workers=0) as cluster:
        first = cluster.spawn_worker()
        exp_id = _cartpole_experiment(cluster, agent="PPO", total_timesteps=400_000, seed=3)
        task_id = cluster.client.post(f"/api/experiments/{exp_id}/train").json()["task_id"]
        deadline = time.monotonic() + 120
        checkpoint = None
        while time.monotonic() < deadline:
            run = _run(cluster, task_id)
            checkpoint = cluster.settings.artifacts_dir / "checkpoints" / f"run-{run.id}.npz"
            if run.status == "running" and checkpoint.exists() and run.timesteps > 0:
                break
            time.sleep(0.1)
        assert checkpoint is not None and checkpoint.exists(), "training never checkpointed"
        os.killpg(first.pid, signal.SIGKILL)  # the whole dramatiq process group, mid-training
        first.wait()
        assert _run(cluster, task_id).status == "running"
        cluster.spawn_worker()
        task = cluster.wait_task(task_id, timeout=300)
        assert task["status"] == "succeeded", task
        run = _run(cluster, task_id)
        assert run.attempts == 2 and run.resumed_from is not None and run.resumed_from > 0
        assert run.timesteps >= 400_000
        with cluster.storage.db.session() as session:
            completed = session.scalar(select(func.count()).select_from(EventRecord).where(
                EventRecord.type == "resimhub.training.completed"))
            models = session.scalar(select(func.count()).select_from(Model).where(Model.run_id == run.id))
            snapshots = session.scalar(select(func.count()).select_from(EventRecord).where(
                EventRecord.type == "resimhub.snapshot.written"))
        assert (completed, models, snapshots) == (1, 1, 1)
