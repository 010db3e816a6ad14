"""An experiment's outcome is an event: ``resimhub.experiment.completed`` with its statistics, or
``resimhub.experiment.failed`` with the reason, exactly once per training task, in the same
transaction as the state change, whichever path fails it (a run's training, its evaluation, or an
actor that gave up). Checked through ``GET /api/events`` on the embedded hub, on SQLite and on the
machine's PostgreSQL (where runs of one experiment really fail at the same time)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from actors import evaluations, training
from actors.failures import record_give_up
from storage.events import TrainingRequested
from storage.models import Evaluation, ProcessedEvent, TrainingRun
from tests.support.hubs import running_hub, settings_for
from tests.support.services import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request, tmp_path):
    if request.param == "sqlite":
        settings = settings_for(tmp_path)
        with running_hub(settings) as h:
            _register(h)
            yield h
    else:
        with fresh_postgres_database() as url:
            with running_hub(settings_for(tmp_path, RESIMHUB_DATABASE_URL=url)) as h:
                _register(h)
                yield h


def _register(hub) -> None:
    task = hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    assert task["status"] == "succeeded", task


def _train(hub, seeds: list[int], **fields) -> tuple[int, str]:
    body = {"name": "outcome", "env_name": "CartPole-v1", "agent": "CEM", "total_timesteps": 2000,
            "seeds": seeds, "eval_episodes": 5, **fields}
    r = hub.client.post("/api/experiments", json=body)
    assert r.status_code == 201, r.text
    exp_id = r.json()["id"]
    r = hub.client.post(f"/api/experiments/{exp_id}/train")
    assert r.status_code == 202, r.text
    return exp_id, r.json()["task_id"]


def _events(hub, **params) -> list[dict]:
    seen, cursor = [], None
    while True:
        page = hub.client.get("/api/events", params={"limit": 1000, **params,
                                                      **({} if cursor is None else {"after": cursor})}).json()
        seen += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def _outcomes(hub, exp_id: int) -> list[dict]:
    return [e for e in _events(hub, subject=f"experiments/{exp_id}")
            if e["type"] in ("resimhub.experiment.completed", "resimhub.experiment.failed")]


def _wait(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _runs_finished(hub, task_id: str) -> bool:
    with hub.storage.db.session() as session:
        runs = session.scalars(select(TrainingRun).where(TrainingRun.task_id == task_id)).all()
        return all(r.status in ("completed", "failed", "cancelled") for r in runs)


def _aggregated(hub, count: int) -> bool:
    with hub.storage.db.session() as session:
        return session.scalar(select(func.count()).select_from(ProcessedEvent)
                              .where(ProcessedEvent.consumer == "aggregate")) >= count


def test_a_completed_experiment_emits_one_event_with_its_statistics(hub):
    exp_id, task_id = _train(hub, [0, 1])
    task = hub.wait_task(task_id, timeout=120)
    assert task["status"] == "succeeded", task
    results = hub.client.get(f"/api/experiments/{exp_id}").json()["results"]

    (completed,) = _outcomes(hub, exp_id)
    assert completed["type"] == "resimhub.experiment.completed"
    data = completed["data"]
    assert data["experiment_id"] == exp_id and data["task_id"] == task_id
    for key in ("mean_return", "iqm", "ci95", "statistics_over", "seeds", "final_returns", "training_episodes",
                "timesteps", "solved", "reward_threshold"):
        assert data[key] == results[key], key
    assert data["statistics_over"] == "seeds" and len(data["ci95"]) == 2
    assert [r["run_id"] for r in data["runs"]] == [r["run_id"] for r in results["runs"]]
    assert [r["mean"] for r in data["runs"]] == results["final_returns"]
    assert data["episodes"] == 10 and all(r["episodes"] == 5 for r in data["runs"])
    assert len(_events(hub, type="resimhub.experiment.completed")) == 1
    assert _events(hub, type="resimhub.experiment.failed") == []
    # The outcome comes after every other milestone of the experiment's training.
    types = [e["type"] for e in _events(hub, subject=f"experiments/{exp_id}")]
    assert types.index("resimhub.experiment.completed") > max(i for i, t in enumerate(types)
                                                               if t == "resimhub.training.completed")


def test_every_seed_failing_its_training_fails_the_experiment_once(hub, monkeypatch):
    from actors.rl.agents import cem

    def broken(*args, **kwargs):
        time.sleep(0.2)  # the worker's two threads fail two runs at about the same time
        raise FloatingPointError("the policy diverged")

    monkeypatch.setattr(cem, "train", broken)
    exp_id, task_id = _train(hub, [0, 1, 2])
    assert hub.wait_task(task_id, timeout=60)["status"] == "failed"
    _wait(lambda: _runs_finished(hub, task_id), what="every run to finish")

    with hub.storage.db.session() as session:
        failed_runs = session.scalar(select(func.count()).select_from(TrainingRun)
                                     .where(TrainingRun.task_id == task_id, TrainingRun.status == "failed"))
    # A run whose message arrives after the task failed is skipped, not trained; the rest fail.
    assert failed_runs >= 2
    assert len(_events(hub, type="resimhub.training.failed", subject=f"experiments/{exp_id}")) == failed_runs
    (failed,) = _outcomes(hub, exp_id)
    assert failed["type"] == "resimhub.experiment.failed"
    data = failed["data"]
    assert data["experiment_id"] == exp_id and data["task_id"] == task_id and data["stage"] == "training"
    assert "the policy diverged" in data["reason"] and data["error"]["code"] == "training_failed"
    assert "traceback" not in data["error"]
    assert hub.client.get(f"/api/experiments/{exp_id}").json()["status"] == "failed"
    assert len(_events(hub, type="resimhub.experiment.failed")) == 1


def test_failed_evaluations_fail_the_experiment_once(hub, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("the environment broke")

    monkeypatch.setattr(evaluations, "_run", broken)
    exp_id, task_id = _train(hub, [0, 1])
    assert hub.wait_task(task_id, timeout=120)["status"] == "failed"
    _wait(lambda: _aggregated(hub, 2), what="both failed evaluations to be aggregated")

    assert len(_events(hub, type="resimhub.evaluation.failed")) == 2
    (failed,) = _outcomes(hub, exp_id)
    data = failed["data"]
    assert failed["type"] == "resimhub.experiment.failed" and data["stage"] == "evaluation"
    assert "the environment broke" in data["reason"] and data["error"]["code"] == "evaluation_failed"
    assert data["run_id"] is not None


def test_a_training_actor_that_gives_up_records_the_failure_through_the_outbox(hub, monkeypatch):
    def bug(*args, **kwargs):
        raise KeyError("a bug after training")

    monkeypatch.setattr(training, "_record_success", bug)  # escapes the actor: the worker gives up
    exp_id, task_id = _train(hub, [0])
    task = hub.wait_task(task_id, timeout=60)
    assert task["status"] == "failed" and task["error"]["code"] == "gave_up"

    (run_failed,) = _events(hub, type="resimhub.training.failed", subject=f"experiments/{exp_id}")
    assert run_failed["data"]["error"]["code"] == "gave_up" and "a bug after training" in run_failed["data"][
        "error"]["message"]
    (failed,) = _outcomes(hub, exp_id)
    assert failed["type"] == "resimhub.experiment.failed"
    assert failed["data"]["stage"] == "training" and failed["data"]["error"]["code"] == "gave_up"
    assert "train gave up" in failed["data"]["reason"]
    types = [e["type"] for e in _events(hub, subject=f"experiments/{exp_id}")]
    assert types.index("resimhub.training.failed") < types.index("resimhub.experiment.failed")


def test_an_evaluation_actor_that_gives_up_fails_its_evaluation_and_experiment_once(hub, monkeypatch):
    def bug(model):
        raise KeyError("a bug before the evaluation")

    monkeypatch.setattr(evaluations, "loader_options", bug)  # outside the actor's own error handling
    exp_id, task_id = _train(hub, [0, 1])
    task = hub.wait_task(task_id, timeout=120)
    assert task["status"] == "failed" and task["error"]["code"] == "gave_up"
    _wait(lambda: _aggregated(hub, 2), what="both given-up evaluations to be aggregated")

    evaluation_failures = _events(hub, type="resimhub.evaluation.failed")
    assert len(evaluation_failures) == 2
    assert all(e["data"]["error"]["code"] == "gave_up" for e in evaluation_failures)
    with hub.storage.db.session() as session:
        assert {e.status for e in session.scalars(select(Evaluation))} == {"failed"}
        assert {r.status for r in session.scalars(select(TrainingRun))} == {"failed"}
    (failed,) = _outcomes(hub, exp_id)
    assert failed["type"] == "resimhub.experiment.failed" and failed["data"]["stage"] == "evaluation"
    assert "evaluate gave up" in failed["data"]["reason"]


def test_a_webhook_fan_out_that_gives_up_fails_no_task(hub):
    exp_id, task_id = _train(hub, [0])
    assert hub.wait_task(task_id, timeout=120)["status"] == "succeeded"
    with hub.storage.db.session() as session:
        run = session.scalars(select(TrainingRun).where(TrainingRun.task_id == task_id)).one()
    doc = {"id": "00000000-0000-4000-8000-000000000001", "type": "resimhub.training.requested",
           "data": TrainingRequested(experiment_id=exp_id, task_id=task_id, run_id=run.id, seed=0).data()}
    record_give_up(hub.runtime, {"actor_name": "fan_out_webhooks", "args": [doc], "options": {"traceback": "boom"}},
                   {"retries": 3})
    assert hub.client.get(f"/api/tasks/{task_id}").json()["status"] == "succeeded"
    assert hub.client.get(f"/api/experiments/{exp_id}").json()["status"] == "completed"
    assert [e["type"] for e in _outcomes(hub, exp_id)] == ["resimhub.experiment.completed"]
