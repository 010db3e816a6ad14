"""Bounds on training cost through the API: hyperparameters beyond their agent's limits are refused
before anything is written, a cancel stops even a run with an enormous update within about a
second, and a run that outlives RESIMHUB_TRAINING_TIME_LIMIT fails with ``training_time_limit``."""

from __future__ import annotations

import time

import pytest

from actors.rl.agents import AGENTS, common
from storage.models import TrainingRun
from tests.support.hubs import running_hub, settings_for

BASE = {"name": "limits", "env_name": "CartPole-v1", "total_timesteps": 1000}
LIMITED = [(name, field, limit) for name, module in AGENTS.items() if name != "QLEARNING"
           for field, limit in common.limits_of(module.Args).items()]
# One PPO update of 100 epochs x 4096 one-row minibatches: minutes of work without inner checks.
HUGE_UPDATE = {"n_epochs": 100, "num_minibatches": 4096, "n_steps": 512}


@pytest.fixture
def cartpole(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    return hub


def _over(limit: common.Limit, default):
    return [limit.maximum + 1] if isinstance(default, tuple) else limit.maximum + 1


def _nothing_written(hub) -> None:
    assert hub.client.get("/api/experiments").json() == []
    events = hub.client.get("/api/events", params={"type": "resimhub.experiment.created"}).json()["events"]
    assert events == []


@pytest.mark.parametrize(("agent", "field", "limit"), LIMITED, ids=[f"{a}.{f}" for a, f, _ in LIMITED])
def test_a_hyperparameter_beyond_its_limit_is_refused_naming_field_limit_and_value(cartpole, agent, field, limit):
    value = _over(limit, getattr(AGENTS[agent].Args(), field))
    r = cartpole.client.post("/api/experiments", json={**BASE, "agent": agent, "hyperparams": {field: value}})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and str(limit.maximum) in error["message"]
    [detail] = error["details"]
    assert detail["field"].startswith(f"hyperparams.{field}") and detail["type"] == "less_than_equal"
    assert detail["limit"] == limit.maximum and detail["value"] == limit.maximum + 1
    _nothing_written(cartpole)


def test_the_reported_case_and_json_oddities(cartpole):
    client = cartpole.client
    for prefix in ("/api", "/api/v1"):  # the Flask legacy route validates through the same service
        r = client.post(f"{prefix}/experiments", json={**BASE, "agent": "PPO", "hyperparams": {"n_epochs": 1e8}})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
        assert r.json()["error"]["details"] == [{
            "field": "hyperparams.n_epochs", "message": "n_epochs=100000000.0 exceeds its limit of 100",
            "type": "less_than_equal", "limit": 100, "value": 1e8}]
    # Python's JSON reads Infinity; the answer must still be JSON (no infinity in it).
    r = client.post("/api/experiments", content=b'{"name": "x", "env_name": "CartPole-v1", "agent": "PPO", '
                    b'"hyperparams": {"n_epochs": Infinity}}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["value"] == "inf"
    r = client.post("/api/experiments", json={**BASE, "agent": "PPO", "hyperparams": {"hidden_sizes": [64] * 5}})
    detail = r.json()["error"]["details"][0]
    assert r.status_code == 422 and (detail["field"], detail["limit"], detail["value"]) == (
        "hyperparams.hidden_sizes", 4, 5)
    r = client.post("/api/experiments", json={**BASE, "agent": "PPO", "hyperparams": {"num_envs": 64, "n_steps": 8192}})
    detail = r.json()["error"]["details"][0]
    assert r.status_code == 422 and (detail["field"], detail["limit"], detail["value"]) == ("hyperparams.n_steps", 1024,
                                                                                            8192)
    r = client.post("/api/experiments", json={**BASE, "agent": "PPO", "hyperparams": {"n_epochs": 0}})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["type"] == "greater_than_equal"
    r = client.post("/api/experiments", json={**BASE, "agent": "PPO", "hyperparams": {"n_epochs": 2.5}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_hyperparameter"
    _nothing_written(cartpole)
    r = client.post("/api/experiments", json={**BASE, "agent": "PPO", "hyperparams": {"n_epochs": 100,
                                                                                        "hidden_sizes": [512] * 4}})
    assert r.status_code == 201, r.text


def test_a_stored_experiment_beyond_a_limit_is_refused_when_training_starts(cartpole):
    """Experiments written before a limit existed: 422 at /train, not a run that fails later."""
    from storage.models import Experiment

    exp_id = cartpole.client.post("/api/experiments", json={**BASE, "agent": "PPO"}).json()["id"]
    with cartpole.storage.db.session() as session:
        session.get(Experiment, exp_id).hyperparams = {"n_epochs": 10**8}
        session.commit()
    r = cartpole.client.post(f"/api/experiments/{exp_id}/train")
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "hyperparams.n_epochs"
    assert cartpole.client.get(f"/api/experiments/{exp_id}").json()["status"] == "created"


def _run(hub, task_id: str) -> TrainingRun:
    with hub.storage.db.session() as session:
        return session.query(TrainingRun).filter_by(task_id=task_id).one()


def _wait_running(hub, task_id: str) -> None:
    deadline = time.monotonic() + 60
    while _run(hub, task_id).status != "running":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)


def test_a_cancel_stops_a_run_inside_an_enormous_update(cartpole):
    hub = cartpole
    r = hub.client.post("/api/experiments", json={**BASE, "agent": "PPO", "total_timesteps": 1_000_000,
                                                  "hyperparams": HUGE_UPDATE})
    task_id = hub.client.post(f"/api/experiments/{r.json()['id']}/train").json()["task_id"]
    _wait_running(hub, task_id)
    time.sleep(2.0)  # set-up and the first 4096-step rollout take well under that; the update is running
    asked = time.monotonic()
    assert hub.client.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    while (run := _run(hub, task_id)).finished_at is None:
        assert time.monotonic() - asked < 30, "training did not stop"
        time.sleep(0.05)
    took = time.monotonic() - asked
    # The actor polls the task every 0.5 s and the engine asks every 50 ms: well under 2 s.
    assert took < 2.0, f"the run stopped {took:.2f} s after the cancel"
    assert run.status == "cancelled" and run.timesteps <= 4096


def test_a_run_beyond_its_time_limit_fails_with_training_time_limit(tmp_path):
    with running_hub(settings_for(tmp_path, RESIMHUB_TRAINING_TIME_LIMIT="3")) as hub:
        hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
        exp_id = hub.client.post("/api/experiments", json={**BASE, "agent": "PPO", "total_timesteps": 1_000_000,
                                                           "hyperparams": HUGE_UPDATE}).json()["id"]
        task_id = hub.client.post(f"/api/experiments/{exp_id}/train").json()["task_id"]
        task = hub.wait_task(task_id, timeout=60)
        assert task["status"] == "failed" and task["error"]["code"] == "training_time_limit", task
        assert "time limit of 3 s" in task["error"]["message"]
        details = task["error"]["details"]
        assert details["limit_s"] == 3 and 0 < details["timesteps"] < details["total_timesteps"] == 1_000_000
        assert hub.client.get(f"/api/experiments/{exp_id}").json()["status"] == "failed"
        run = _run(hub, task_id)
        assert run.status == "failed" and run.error["code"] == "training_time_limit"
        started, finished = run.started_at, run.finished_at
        assert 3 <= (finished - started).total_seconds() < 10
        assert hub.storage.artifacts.checkpoint_path(run.id).exists()  # kept for inspection or a resume
        events = hub.client.get("/api/events", params={"subject": f"experiments/{exp_id}"}).json()["events"]
        assert [e["type"] for e in events[-2:]] == ["resimhub.training.failed", "resimhub.experiment.failed"]
        assert events[-2]["data"]["error"]["code"] == events[-1]["data"]["error"]["code"] == "training_time_limit"
