"""The ``evaluate`` actor called directly: who finishes which task, idempotency, failures that are
recorded versus errors that are retried, and throttled progress."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from actors import evaluations
from actors.rl.evaluation import evaluate as engine_evaluate
from actors.rl.modelfiles import load_policy
from storage import tasks
from storage.events import Envelope, EvaluationRequested
from storage.models import Environment, Evaluation, EventRecord, Experiment, Model, ProcessedEvent, Task
from tests.support.fixtures import SEED_DQN_MODEL
from tests.support.hubs import running_hub, settings_for

FIXTURE = SEED_DQN_MODEL
ENV = "CartPole-v1"


@pytest.fixture
def hub(tmp_path):
    """A hub whose actors are booted but not consuming: the test calls the actor itself."""
    with running_hub(settings_for(tmp_path), worker=False, relay=True) as h:
        yield h


def stored_model(hub) -> str:
    with open(FIXTURE, "rb") as fh:
        r = hub.client.post("/benchmark/upload_model", files={"file": ("m.pt", fh)}, data={"env_name": ENV})
    assert r.status_code == 202, r.text
    return r.json()["model_id"]


def request(hub, model_id: str, *, episodes: int = 6, seed: int = 3, experiment: bool = False) -> dict:
    """An Evaluation row, its task and the CloudEvent the actor would receive."""
    db = hub.storage.db
    with db.session() as session:
        experiment_id = None
        task = tasks.create(session, "train" if experiment else "evaluate")
        if experiment:
            env = Environment(env_name=ENV, status="verified")
            session.add(env)
            session.flush()
            exp = Experiment(name="x", environment_id=env.id, env_name=ENV, agent="DQN", seeds=[0])
            session.add(exp)
            session.flush()
            experiment_id = exp.id
            tasks.mark_running(session, task)
        evaluation = Evaluation(id=str(uuid.uuid4()), model_id=model_id, env_name=ENV, episodes=episodes, seed=seed,
                                mode="exact", task_id=task.id, experiment_id=experiment_id)
        session.add(evaluation)
        session.commit()
        event = EvaluationRequested(evaluation_id=evaluation.id, task_id=task.id, model_id=model_id, env_name=ENV,
                                    episodes=episodes, seed=seed, experiment_id=experiment_id)
    return Envelope.wrap(event).to_cloudevent()


def rows(hub, query):
    with hub.storage.db.session() as session:
        return list(session.scalars(query))


def test_a_training_evaluation_stores_the_result_but_leaves_the_task_alone(hub):
    doc = request(hub, stored_model(hub), experiment=True)
    evaluations.evaluate(hub.runtime, doc)
    (evaluation,) = rows(hub, select(Evaluation))
    assert evaluation.status == "completed" and evaluation.finished_at is not None
    expected = engine_evaluate(load_policy(FIXTURE, env_id=ENV).policy, ENV, 6, 3)
    assert evaluation.result["returns"] == expected.returns and evaluation.mean_reward == expected.mean
    assert evaluation.result["experiment_id"] == evaluation.experiment_id
    (task,) = rows(hub, select(Task).where(Task.id == doc["data"]["task_id"]))
    assert task.status == "running" and task.result is None  # the aggregate actor finishes it
    (completed,) = rows(hub, select(EventRecord).where(EventRecord.type == "resimhub.evaluation.completed"))
    assert completed.data["experiment_id"] == evaluation.experiment_id and completed.data["episodes"] == 6

    evaluations.evaluate(hub.runtime, doc)  # redelivered: nothing happens twice
    assert len(rows(hub, select(EventRecord).where(EventRecord.type == "resimhub.evaluation.completed"))) == 1
    assert len(rows(hub, select(ProcessedEvent).where(ProcessedEvent.consumer == "evaluate"))) == 1


def test_a_benchmark_evaluation_finishes_its_own_task(hub):
    doc = request(hub, stored_model(hub))
    evaluations.evaluate(hub.runtime, doc)
    (task,) = rows(hub, select(Task).where(Task.id == doc["data"]["task_id"]))
    assert task.status == "succeeded" and task.result["total_episodes"] == 6


def test_a_missing_file_is_a_recorded_failure_not_an_exception(hub):
    model_id = stored_model(hub)
    (model,) = rows(hub, select(Model))
    hub.storage.artifacts.delete(model.path)
    doc = request(hub, model_id)
    evaluations.evaluate(hub.runtime, doc)  # must not raise: a retry cannot bring the file back
    (evaluation,) = rows(hub, select(Evaluation))
    assert evaluation.status == "failed" and evaluation.error["code"] == "model_file_missing"
    (task,) = rows(hub, select(Task).where(Task.id == doc["data"]["task_id"]))
    assert task.status == "failed" and task.error["code"] == "model_file_missing"
    assert task.error["retryable"] is False
    (failed,) = rows(hub, select(EventRecord).where(EventRecord.type == "resimhub.evaluation.failed"))
    assert failed.data["error"]["code"] == "model_file_missing"


def test_a_model_that_does_not_fit_the_env_fails_with_its_code(hub):
    model_id = stored_model(hub)
    doc = request(hub, model_id)
    doc["data"]["env_name"] = "Acrobot-v1"  # 6 observations, 3 actions
    with hub.storage.db.session() as session:
        session.get(Evaluation, doc["data"]["evaluation_id"]).env_name = "Acrobot-v1"
        session.commit()
    evaluations.evaluate(hub.runtime, doc)
    (evaluation,) = rows(hub, select(Evaluation))
    assert evaluation.status == "failed" and evaluation.error["code"] == "shape_mismatch"


def test_a_transient_error_is_raised_for_the_bus_to_retry(hub, monkeypatch):
    doc = request(hub, stored_model(hub))

    def database_went_away(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(evaluations, "_run", database_went_away)
    with pytest.raises(OperationalError):
        evaluations.evaluate(hub.runtime, doc)
    (evaluation,) = rows(hub, select(Evaluation))
    assert evaluation.status == "running"
    assert rows(hub, select(ProcessedEvent)) == []
    monkeypatch.undo()
    evaluations.evaluate(hub.runtime, doc)  # the retry completes it
    assert rows(hub, select(Evaluation))[0].status == "completed"


def test_progress_is_reported_and_throttled(hub, monkeypatch):
    doc = request(hub, stored_model(hub), episodes=40)
    written = []
    real = tasks.set_progress

    def spy(session, task, progress):
        written.append(progress)
        return real(session, task, progress)

    monkeypatch.setattr(tasks, "set_progress", spy)
    monkeypatch.setattr(evaluations, "PROGRESS_INTERVAL_S", 0.0)
    evaluations.evaluate(hub.runtime, doc)
    assert written, "no progress was reported"
    assert all(set(p) == {"fraction", "episodes", "total_episodes"} for p in written)
    assert [p["episodes"] for p in written] == sorted(p["episodes"] for p in written)
    assert all(0 < p["fraction"] < 1 and p["total_episodes"] == 40 for p in written)
    (task,) = rows(hub, select(Task).where(Task.id == doc["data"]["task_id"]))
    assert task.status == "succeeded" and task.progress["fraction"] == 1.0

    written.clear()
    throttled = evaluations._Progress(hub.storage.db, doc["data"]["task_id"], interval=3600)
    for done in range(1, 100):
        throttled(done, 100)
    assert written == []
