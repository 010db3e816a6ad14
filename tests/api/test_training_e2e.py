"""Embedded end to end: an experiment is really trained, really evaluated and aggregated by actors
chained through events, and its progress, result and events are visible through the API."""

import time

import pytest

from storage.models import TrainingRun


@pytest.fixture
def cartpole(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    return hub


def _experiment(client, **fields):
    body = {"name": "run", "env_name": "CartPole-v1", "agent": "CEM", **fields}
    r = client.post("/api/experiments", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.slow
def test_cem_experiment_is_trained_evaluated_and_aggregated(cartpole):
    hub = cartpole
    exp_id = _experiment(hub.client, total_timesteps=300_000, seed=0, eval_episodes=100)
    r = hub.client.post(f"/api/experiments/{exp_id}/train")
    assert r.status_code == 202 and r.headers["location"].startswith("/api/tasks/")
    task_id = r.json()["task_id"]
    task = hub.wait_task(task_id, timeout=300)
    assert task["status"] == "succeeded", task
    assert task["progress"]["fraction"] == 1.0

    exp = hub.client.get(f"/api/experiments/{exp_id}").json()
    results = exp["results"]
    assert exp["status"] == "completed"
    assert results["evaluation"]["episodes"] == 100 and results["mean_return"] >= 475
    assert results["solved"] is True and results["learning_curve"]
    assert results["best_return"] >= results["learning_curve"][0]["mean_return"]
    model_id = results["runs"][0]["model_id"]
    assert task["progress"]["timesteps"] == results["timesteps"] >= 300_000
    assert task["progress"]["episodes"] == results["training_episodes"]

    types = [e["type"] for e in hub.client.get("/api/events", params={"subject": f"experiments/{exp_id}",
                                                                       "limit": 1000}).json()["events"]]
    milestones = [t for t in types if t != "resimhub.training.progressed"]
    assert milestones == ["resimhub.experiment.created", "resimhub.training.requested", "resimhub.training.started",
                          "resimhub.training.completed", "resimhub.experiment.completed", "resimhub.snapshot.written"]
    evals = hub.client.get("/api/events", params={"type": "resimhub.evaluation.*"}).json()["events"]
    assert [e["type"] for e in evals] == ["resimhub.evaluation.requested", "resimhub.evaluation.completed"]
    assert evals[1]["data"]["model_id"] == model_id

    legacy = hub.client.get(f"/api/v1/task_status/{task_id}").json()
    assert legacy["status"] == "succeeded" and legacy["result"]["mean_return"] == results["mean_return"]
    snapshots = hub.settings.snapshots_dir
    assert list((snapshots / "episodes").rglob("*.parquet")) and list((snapshots / "experiments").rglob("*.parquet"))


def test_progress_is_reported_and_cancellation_stops_training(cartpole):
    hub = cartpole
    exp_id = _experiment(hub.client, agent="PPO", total_timesteps=2_000_000, seed=1)
    task_id = hub.client.post("/api/v1/start_training", json={"experiment_id": exp_id}).json()["task_id"]
    deadline = time.monotonic() + 60
    progress = None
    while time.monotonic() < deadline:
        task = hub.client.get(f"/api/tasks/{task_id}").json()
        progress = task["progress"]
        if task["status"] == "running" and progress and progress["timesteps"] > 0:
            break
        time.sleep(0.2)
    assert 0 < progress["fraction"] < 1 and progress["episodes"] > 0 and progress["latest_return"] is not None
    r = hub.client.post(f"/api/tasks/{task_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert hub.client.post(f"/api/tasks/{task_id}/cancel").status_code == 409
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with hub.storage.db.session() as session:
            run = session.query(TrainingRun).filter_by(task_id=task_id).one()
            if run.finished_at is not None:
                break
        time.sleep(0.2)
    assert run.status == "cancelled" and run.finished_at is not None and run.timesteps < 2_000_000
    assert hub.client.get(f"/api/experiments/{exp_id}").json()["status"] == "cancelled"


def test_a_failing_training_fails_task_and_experiment(cartpole, monkeypatch):
    from actors.rl.agents import cem

    def broken(*args, **kwargs):
        raise FloatingPointError("the policy diverged")

    monkeypatch.setattr(cem, "train", broken)  # the embedded worker runs in this process
    hub = cartpole
    exp_id = _experiment(hub.client, agent="CEM", total_timesteps=5000)
    task_id = hub.client.post(f"/api/experiments/{exp_id}/train").json()["task_id"]
    task = hub.wait_task(task_id, timeout=60)
    assert task["status"] == "failed" and task["error"]["code"] == "training_failed"
    assert "the policy diverged" in task["error"]["message"] and task["error"]["type"] == "FloatingPointError"
    assert hub.client.get(f"/api/experiments/{exp_id}").json()["status"] == "failed"
    types = [e["type"] for e in hub.client.get("/api/events", params={"subject": f"experiments/{exp_id}"}).json()[
        "events"]]
    assert types[-2:] == ["resimhub.training.failed", "resimhub.experiment.failed"]


def test_training_twice_at_once_is_a_conflict(cartpole):
    exp_id = _experiment(cartpole.client, agent="PPO", total_timesteps=2_000_000)
    first = cartpole.client.post(f"/api/experiments/{exp_id}/train")
    second = cartpole.client.post(f"/api/experiments/{exp_id}/train")
    assert first.status_code == 202 and second.status_code == 409
    assert second.json()["error"]["code"] == "already_running"
    cartpole.client.post(f"/api/tasks/{first.json()['task_id']}/cancel")


def test_an_actor_that_gives_up_fails_the_task_instead_of_leaving_it_running(cartpole, monkeypatch):
    from actors import training

    def bug(*args, **kwargs):
        raise KeyError("a bug after training")

    monkeypatch.setattr(training, "_record_success", bug)  # escapes the actor: not retryable
    exp_id = _experiment(cartpole.client, agent="CEM", total_timesteps=5000)
    task_id = cartpole.client.post(f"/api/experiments/{exp_id}/train").json()["task_id"]
    task = cartpole.wait_task(task_id, timeout=60)
    assert task["status"] == "failed" and task["error"]["code"] == "gave_up"
    assert "train gave up" in task["error"]["message"] and "a bug after training" in task["error"]["message"]
    assert cartpole.client.get(f"/api/experiments/{exp_id}").json()["status"] == "failed"
