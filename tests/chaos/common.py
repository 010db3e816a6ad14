"""What the chaos scenarios share: submitting short real trainings, and counting what happened.

The counts come straight from the database (event log, models, idempotency ledger) rather than
from the API, so that a duplicate a route would hide (e.g. two models for one run) still shows.
"""

from __future__ import annotations

import time
from collections import Counter

from sqlalchemy import func, select

from storage.models import EventRecord, Model, ProcessedEvent, Task, TrainingRun

CARTPOLE = "CartPole-v1"


def register_cartpole(cluster, timeout: float = 90.0) -> None:
    r = cluster.client.post("/api/environments", json={"env_name": CARTPOLE})
    assert r.status_code == 202, r.text
    task = cluster.wait_task(r.json()["task_id"], timeout=timeout)
    assert task["status"] == "succeeded", task


def submit_training(client, name: str, *, total_timesteps: int, seed: int = 0, eval_episodes: int = 5,
                    agent: str = "CEM", hyperparams: dict | None = None) -> tuple[int, str]:
    """Create an experiment and start it; returns (experiment id, task id). Both answers are checked."""
    r = client.post("/api/experiments", json={
        "name": name, "env_name": CARTPOLE, "agent": agent, "total_timesteps": total_timesteps, "seed": seed,
        "eval_episodes": eval_episodes, "hyperparams": hyperparams or {}})
    assert r.status_code == 201, r.text
    exp_id = r.json()["id"]
    r = client.post(f"/api/experiments/{exp_id}/train")
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/tasks/{r.json()['task_id']}"
    return exp_id, r.json()["task_id"]


def running_runs(storage) -> int:
    with storage.db.session() as session:
        return session.scalar(select(func.count()).select_from(TrainingRun).where(TrainingRun.status == "running"))


def task_statuses(storage, task_ids: list[str]) -> Counter:
    with storage.db.session() as session:
        return Counter(session.scalars(select(Task.status).where(Task.id.in_(task_ids))))


def wait_all_terminal(storage, task_ids: list[str], timeout: float, poll: float = 0.5) -> Counter:
    """Wait on the database (one query per look, not one request per task) until every task is final."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = task_statuses(storage, task_ids)
        if sum(statuses[s] for s in ("succeeded", "failed", "cancelled")) == len(task_ids):
            return statuses
        if time.monotonic() > deadline:
            return statuses
        time.sleep(poll)


def _count_by(session, event_type: str, field: str) -> Counter:
    rows = session.scalars(select(EventRecord.data).where(EventRecord.type == event_type))
    return Counter(data[field] for data in rows)


def assert_each_run_completed_once(storage, task_ids: list[str]) -> list[TrainingRun]:
    """Every run of these tasks completed, and every step of its chain happened exactly once."""
    with storage.db.session() as session:
        runs = list(session.scalars(select(TrainingRun).where(TrainingRun.task_id.in_(task_ids))))
        completed = _count_by(session, "resimhub.training.completed", "run_id")
        evaluated = _count_by(session, "resimhub.evaluation.completed", "run_id")
        snapshots = _count_by(session, "resimhub.snapshot.written", "experiment_id")
        requested = list(session.scalars(select(EventRecord.event_id)
                                         .where(EventRecord.type == "resimhub.training.requested")))
        models = Counter(session.scalars(select(Model.run_id).where(Model.source == "training")))
        ledger = Counter(session.scalars(select(ProcessedEvent.event_id).where(ProcessedEvent.consumer == "train")))
    assert len(runs) == len(task_ids), "a task has no run, or more than one"
    assert Counter(r.status for r in runs) == Counter({"completed": len(runs)})
    run_ids = {r.id for r in runs}
    twice = {run: n for run, n in completed.items() if n != 1}
    assert not twice, f"TrainingCompleted more than once for runs {twice}"
    assert set(completed) == run_ids, "a run never emitted TrainingCompleted"
    assert {run: n for run, n in models.items() if n != 1} == {}, "more than one model for a run"
    assert set(models) == run_ids and all(r.model_id is not None for r in runs)
    assert {run: n for run, n in evaluated.items() if n != 1} == {} and set(evaluated) == run_ids
    experiments = {r.experiment_id for r in runs}
    assert {e: n for e, n in snapshots.items() if n != 1} == {} and set(snapshots) == experiments
    # The ledger's key makes a second row impossible; what it proves is that every request was handled.
    assert len(requested) == len(runs) and all(ledger[event_id] == 1 for event_id in requested)
    return runs
