"""From the database to snapshot batches: the one mapping, used by the pipeline and by a rebuild.

Every value comes from a stored column (never from the clock), so that the aggregate actor and a
later ``resimhub analytics snapshot`` produce byte-for-byte the same rows and put them in the same
partitions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.snapshots import Batch
from storage.evaluations import EvaluationStatus
from storage.experiments import ExperimentStatus
from storage.models import Environment, Evaluation, Experiment, Model, Task, TrainingRun
from storage.runs import RunStatus
from storage.tasks import TaskStatus

#: The state an experiment's history records when one of its training tasks ends: the state
#: storage/experiments.py gave the experiment then. Rows come from stored columns only, so the
#: history is rebuilt from the task's outcome, not from the experiment's current status.
_TASK_OUTCOME: Mapping[TaskStatus, ExperimentStatus] = {
    TaskStatus.SUCCEEDED: ExperimentStatus.COMPLETED,
    TaskStatus.FAILED: ExperimentStatus.FAILED,
    TaskStatus.CANCELLED: ExperimentStatus.CANCELLED,
}


def utc(moment: datetime | None) -> datetime | None:
    """Stored times as aware UTC (SQLite hands them back naive)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _latest(*moments: datetime | None) -> datetime | None:
    present = [utc(m) for m in moments if m is not None]
    return max(present) if present else None


def experiment_batch_id(experiment_id: int, task_id: str) -> str:
    return f"experiment-{experiment_id}-{task_id[:8]}"


def history_batch_id(experiment_id: int) -> str:
    return f"experiment-{experiment_id}"


def benchmark_batch_id(evaluation_id: str) -> str:
    return f"evaluation-{evaluation_id}"


# -- rows of one evaluation ----------------------------------------------------------------------------

def _evaluation_row(evaluation: Evaluation, model: Model | None, *, source: str, agent: str | None,
                    run: TrainingRun | None) -> dict:
    res = evaluation.result or {}
    low, high = (list(res.get("ci95") or []) + [None, None])[:2]
    return {
        "source": source, "evaluation_id": evaluation.id, "task_id": evaluation.task_id,
        "model_id": evaluation.model_id, "model_name": model.name if model else None,
        "model_format": model.format if model else res.get("model_format"),
        "model_sha256": res.get("model_sha256") or (model.sha256 if model else None),
        "experiment_id": evaluation.experiment_id, "run_id": evaluation.run_id, "agent": agent,
        "run_seed": run.seed if run else None, "episodes": evaluation.episodes, "seed": evaluation.seed,
        "mode": evaluation.mode, "mean": res.get("mean"), "std": res.get("std"), "median": res.get("median"),
        "min": res.get("min"), "max": res.get("max"), "iqm": res.get("iqm"), "ci_low": low, "ci_high": high,
        "score": res.get("score"), "mean_length": res.get("mean_length"), "total_steps": res.get("total_steps"),
        "latency_ms": res.get("latency_ms"), "steps_per_second": res.get("steps_per_second"),
        "wall_time_s": res.get("wall_time_s"), "spec_id": res.get("spec_id"),
        "gymnasium_version": res.get("gymnasium_version"), "evaluated_at": utc(evaluation.finished_at),
    }


def _eval_episodes(evaluation: Evaluation, *, source: str, agent: str | None, run: TrainingRun | None) -> dict:
    res = evaluation.result or {}
    returns = [float(r) for r in res.get("returns") or []]
    lengths = [int(n) for n in res.get("lengths") or []][: len(returns)]
    n = len(returns)
    exact = evaluation.mode == "exact"
    return {
        "source": [source] * n, "experiment_id": [evaluation.experiment_id] * n, "task_id": [evaluation.task_id] * n,
        "run_id": [run.id if run else None] * n, "evaluation_id": [evaluation.id] * n,
        "model_id": [evaluation.model_id] * n, "agent": [agent] * n, "seed": [evaluation.seed] * n,
        "phase": ["eval"] * n, "episode": list(range(n)), "step": [None] * n,
        "env_seed": [evaluation.seed + i for i in range(n)] if exact else [None] * n,
        "return": returns, "length": lengths + [None] * (n - len(lengths)),
        "recorded_at": [utc(evaluation.finished_at)] * n,
    }


def _train_episodes(run: TrainingRun, experiment: Experiment, task_id: str) -> dict:
    returns = [float(r) for r in run.episode_returns or []]
    lengths = [int(n) for n in run.episode_lengths or []]
    n = min(len(returns), len(lengths)) if lengths else len(returns)
    steps = np.cumsum(lengths[:n]).tolist() if lengths else [None] * n
    return {
        "source": ["experiment"] * n, "experiment_id": [experiment.id] * n, "task_id": [task_id] * n,
        "run_id": [run.id] * n, "evaluation_id": [None] * n, "model_id": [run.model_id] * n,
        "agent": [experiment.agent] * n, "seed": [run.seed] * n, "phase": ["train"] * n,
        "episode": list(range(n)), "step": steps, "env_seed": [None] * n, "return": returns[:n],
        "length": lengths[:n] if lengths else [None] * n, "recorded_at": [utc(run.finished_at)] * n,
    }


def _concat(parts: Iterable[dict]) -> dict:
    out: dict[str, list] = {}
    for part in parts:
        for key, values in part.items():
            out.setdefault(key, []).extend(values)
    return out


# -- one experiment ----------------------------------------------------------------------------------

_STATISTICS = ("mean_return", "iqm", "statistics_over", "best_return", "training_duration_s",
               "training_duration_total_s", "solved")


def _task_statistics(experiment: Experiment, task: Task, runs: list[TrainingRun]) -> dict:
    """The experiment's statistics for one completed task, as the aggregate actor computed them
    (:func:`actors.aggregation.experiment_results`, kept in the task's result and, for the latest
    training, in the experiment's): read, never computed a second time here."""
    results = task.result or {}
    if not results.get("runs"):
        latest = experiment.results or {}
        if sorted(r.get("run_id") for r in latest.get("runs") or []) == sorted(r.id for r in runs):
            results = latest
    ci = (list(results.get("ci95") or []) + [None, None])[:2]
    return {**{k: results.get(k) for k in _STATISTICS}, "ci_low": ci[0], "ci_high": ci[1]}


def experiment_batches(session: Session, experiment: Experiment, *, task_ids: Iterable[str] | None = None
                       ) -> list[Batch]:
    """The experiment's batches: episodes and evaluations of each finished training task (only of
    ``task_ids`` if given) and the experiment's state history (always whole)."""
    wanted = set(task_ids) if task_ids is not None else None
    runs = list(session.scalars(select(TrainingRun).where(TrainingRun.experiment_id == experiment.id)
                                .order_by(TrainingRun.id)))
    by_task: dict[str, list[TrainingRun]] = {}
    for run in runs:
        by_task.setdefault(run.task_id, []).append(run)
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(list(by_task))))} if by_task else {}
    evaluations = {e.run_id: e for e in session.scalars(
        select(Evaluation).where(Evaluation.run_id.in_([r.id for r in runs]))
        .where(Evaluation.experiment_id == experiment.id))} if runs else {}
    model_ids = [e.model_id for e in evaluations.values()]
    models = {m.id: m for m in session.scalars(select(Model).where(Model.id.in_(model_ids)))} if model_ids else {}
    environment = session.get(Environment, experiment.environment_id)
    spec = (environment.spec if environment else None) or {}
    threshold, max_steps = spec.get("reward_threshold"), spec.get("max_episode_steps")

    base = {"experiment_id": experiment.id, "name": experiment.name, "agent": experiment.agent,
            "seeds": list(experiment.seeds or []), "hyperparams": json.dumps(experiment.hyperparams or {},
                                                                             sort_keys=True),
            "total_timesteps": experiment.total_timesteps, "episodes": experiment.episodes,
            "eval_episodes": experiment.eval_episodes, "eval_seed": experiment.eval_seed,
            "reward_threshold": threshold, "max_episode_steps": max_steps, "created_at": utc(experiment.created_at)}
    history = [{**base, "status": ExperimentStatus.CREATED.value, "task_id": None,
                "recorded_at": utc(experiment.created_at)}]
    batches: list[Batch] = []
    ordered = sorted(by_task.items(), key=lambda item: (utc(tasks[item[0]].created_at) if item[0] in tasks
                                                        else utc(experiment.created_at), item[1][0].id))
    for task_id, task_runs in ordered:
        task = tasks.get(task_id)
        counts = {"seeds": [r.seed for r in task_runs], "training_episodes": sum(r.episodes for r in task_runs),
                  "timesteps": sum(r.timesteps for r in task_runs)}
        started = [utc(r.started_at) for r in task_runs if r.started_at is not None]
        if started:
            history.append({**base, **counts, "status": ExperimentStatus.TRAINING.value, "task_id": task_id,
                            "recorded_at": min(started)})
        # Entered when the last run finished training (storage/experiments.py:start_evaluating).
        trained = [utc(r.finished_at) for r in task_runs
                   if r.status == RunStatus.COMPLETED and r.finished_at is not None]
        if trained and len(trained) == len(task_runs):
            history.append({**base, **counts, "status": ExperimentStatus.EVALUATING.value, "task_id": task_id,
                            "recorded_at": max(trained)})
        if task is None or task.status not in _TASK_OUTCOME:
            continue
        status = _TASK_OUTCOME[TaskStatus(task.status)].value
        finished = utc(task.finished_at) or _latest(experiment.updated_at)
        row = {**base, **counts, "status": status, "task_id": task_id, "recorded_at": finished}
        done = [evaluations.get(r.id) for r in task_runs]
        complete = all(e is not None and e.status == EvaluationStatus.COMPLETED and e.result for e in done)
        if status == ExperimentStatus.COMPLETED and complete:
            row.update(_task_statistics(experiment, task, task_runs))
            if row.get("solved") is None and threshold is not None and row.get("mean_return") is not None:
                row["solved"] = bool(row["mean_return"] >= threshold)
        history.append(row)
        if wanted is not None and task_id not in wanted:
            continue
        parts = [_train_episodes(r, experiment, task_id) for r in task_runs if r.episode_returns]
        eval_rows = []
        for run in task_runs:
            evaluation = evaluations.get(run.id)
            if evaluation is None or evaluation.status != EvaluationStatus.COMPLETED or not evaluation.result:
                continue
            parts.append(_eval_episodes(evaluation, source="experiment", agent=experiment.agent, run=run))
            eval_rows.append(_evaluation_row(evaluation, models.get(evaluation.model_id), source="experiment",
                                             agent=experiment.agent, run=run))
        batch_id = experiment_batch_id(experiment.id, task_id)
        batches.append(Batch("episodes", batch_id, experiment.env_name, finished, _concat(parts)))
        batches.append(Batch("evaluations", batch_id, experiment.env_name, finished, eval_rows))
    if not by_task and experiment.status != ExperimentStatus.CREATED:
        history.append({**base, "status": experiment.status, "task_id": None,
                        "recorded_at": utc(experiment.updated_at)})
    history.sort(key=lambda r: r["recorded_at"])
    batches.append(Batch("experiments", history_batch_id(experiment.id), experiment.env_name,
                         history[-1]["recorded_at"], history))
    return batches


def benchmark_batches(session: Session, evaluation: Evaluation) -> list[Batch]:
    """A completed evaluation that no experiment owns (``/benchmark/run``)."""
    if evaluation.status != EvaluationStatus.COMPLETED or not evaluation.result:
        return []
    model = session.get(Model, evaluation.model_id)
    agent = None
    if model is not None and model.experiment_id is not None:
        owner = session.get(Experiment, model.experiment_id)
        agent = owner.agent if owner else None
    when = utc(evaluation.finished_at) or utc(evaluation.created_at)
    batch_id = benchmark_batch_id(evaluation.id)
    return [
        Batch("episodes", batch_id, evaluation.env_name, when,
              _eval_episodes(evaluation, source="benchmark", agent=agent, run=None)),
        Batch("evaluations", batch_id, evaluation.env_name, when,
              [_evaluation_row(evaluation, model, source="benchmark", agent=agent, run=None)]),
    ]
