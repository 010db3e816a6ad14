"""The ``aggregate`` actor: folds each run's evaluation into its experiment and, once every seed is
in, writes the experiment's statistics and the Parquet snapshots.

Aggregations of one experiment are serialised by locking the experiment row, so exactly one of the
runs' messages sees "all runs evaluated" and finishes the experiment, emitting ``ExperimentCompleted``
with the statistics and then ``SnapshotWritten``; a failed evaluation fails the experiment with
``ExperimentFailed`` (once, however many runs fail; see :mod:`storage.experiments`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import object_session

from actors.handling import consumer
from analytics import rows as snapshot_rows
from analytics import snapshots
from storage import experiments, ledger, outbox, runs, supersession, tasks
from storage.context import Storage
from storage.evaluations import EvaluationStatus
from storage.events import Envelope, EvaluationCompleted, EvaluationFailed, SnapshotWritten
from storage.models import Environment, Evaluation, Experiment, Task, TrainingRun

if TYPE_CHECKING:
    from actors.runtime import Runtime

CONSUMER = "aggregate"
SUMMARY_KEYS = ("mean", "std", "median", "min", "max", "iqm", "ci95", "score", "mean_length", "episodes", "seed")


@consumer(CONSUMER)
def aggregate(runtime: Runtime, envelope: Envelope) -> None:
    event: EvaluationCompleted | EvaluationFailed = envelope.event()  # type: ignore[assignment]
    storage = runtime.storage
    if event.experiment_id is None:
        _snapshot_benchmark(storage, envelope, event)
        return
    with storage.db.session() as session:
        experiment = session.get(Experiment, event.experiment_id, with_for_update=True)
        run = session.get(TrainingRun, event.run_id)
        evaluation = session.get(Evaluation, event.evaluation_id)
        task = session.get(Task, run.task_id)
        if isinstance(event, EvaluationFailed) or evaluation.status != EvaluationStatus.COMPLETED:
            run_error = event.error if isinstance(event, EvaluationFailed) else {"message": "evaluation failed"}
            runs.fail_evaluation(session, run, run_error)
            error = {**run_error, "code": "evaluation_failed"}
            tasks.fail(session, task, error)
            experiments.fail(session, experiment, task_id=task.id, stage="evaluation", error=error, run_id=run.id)
        else:
            run.evaluation = {k: evaluation.result.get(k) for k in SUMMARY_KEYS if k in evaluation.result}
            task_runs = list(session.scalars(select(TrainingRun).where(TrainingRun.task_id == run.task_id)
                                             .order_by(TrainingRun.id)))
            if task.status not in tasks.TERMINAL and all(r.evaluation is not None for r in task_runs):
                evaluations = {e.run_id: e for e in session.scalars(
                    select(Evaluation).where(Evaluation.run_id.in_([r.id for r in task_runs])))}
                environment = session.get(Environment, experiment.environment_id)
                threshold = ((environment.spec or {}).get("reward_threshold") if environment else None)
                results = experiment_results(experiment, task_runs, evaluations, threshold)
                experiments.complete(session, experiment, task_id=task.id, results=results)
                tasks.succeed(session, task, {"experiment_id": experiment.id, **results})
                supersession.supersede_earlier(session, experiment.id, task.id)  # a retrain replaced them
                rows = _write_snapshots(storage.settings.snapshots_dir, experiment, task_runs, evaluations, task.id)
                outbox.record(session, SnapshotWritten(experiment_id=experiment.id,
                                                       datasets=sorted(rows), rows=sum(rows.values())))
        ledger.mark(session, envelope.id, CONSUMER)
        session.commit()


def _snapshot_benchmark(storage: Storage, envelope: Envelope, event: EvaluationCompleted | EvaluationFailed) -> None:
    """A benchmark run's task already carries its result; here it joins the Parquet snapshots."""
    with storage.db.session() as session:
        evaluation = session.get(Evaluation, event.evaluation_id)
        if evaluation is not None:
            batches = snapshot_rows.benchmark_batches(session, evaluation)  # empty unless completed
            snapshots.write_batches(storage.settings.snapshots_dir, batches)
        ledger.mark(session, envelope.id, CONSUMER)
        session.commit()


def learning_curve(runs: list[TrainingRun], bins: int | None = None) -> list[dict]:
    """The runs' training returns by environment step (:func:`actors.rl.stats.learning_curve`),
    from the same episodes the analytics snapshots hold, so both answer the same curve."""
    from actors.rl import stats

    curves = {}
    for run in runs:
        returns = np.asarray(run.episode_returns or [], dtype=float)
        lengths = np.asarray(run.episode_lengths or [], dtype=float)
        n = min(returns.size, lengths.size) if lengths.size else returns.size
        steps = np.cumsum(lengths[:n]) if lengths.size else np.arange(1, n + 1, dtype=float)
        curves[run.seed] = (steps, returns[:n])
    return stats.learning_curve(curves, bins=bins or stats.CURVE_BINS, seed=0)


def experiment_results(experiment: Experiment, runs: list[TrainingRun], evaluations: dict,
                       reward_threshold: float | None) -> dict:
    from actors.rl import stats

    finals = [float(r.evaluation["mean"]) for r in runs]
    pooled = evaluations[runs[0].id].result["returns"] if len(runs) == 1 else None
    across = stats.experiment_iqm(finals, pooled, seed=experiment.eval_seed)
    walls = [float(r.wall_time_s or 0.0) for r in runs]
    return {
        "agent": experiment.agent,
        "env_name": experiment.env_name,
        "seeds": [r.seed for r in runs],
        "final_returns": finals,
        "mean_return": float(np.mean(finals)),
        "iqm": across["iqm"],
        "ci95": across["ci95"],
        "statistics_over": across["over"],
        "reward_threshold": reward_threshold,
        "solved": None if reward_threshold is None else bool(np.mean(finals) >= reward_threshold),
        "evaluation": runs[0].evaluation if len(runs) == 1 else None,
        "best_return": max((r.best_return for r in runs if r.best_return is not None), default=None),
        "training_duration_s": max(walls),
        "training_duration_total_s": float(sum(walls)),
        "timesteps": int(sum(r.timesteps for r in runs)),
        "training_episodes": int(sum(r.episodes for r in runs)),
        "learning_curve": learning_curve(runs),
        "runs": [{"run_id": r.id, "seed": r.seed, "model_id": r.model_id, "timesteps": r.timesteps,
                  "episodes": r.episodes, "wall_time_s": r.wall_time_s, "best_return": r.best_return,
                  "resumed_from": r.resumed_from, "attempts": r.attempts, "evaluation": r.evaluation}
                 for r in runs],
    }


def _write_snapshots(snapshots_dir, experiment: Experiment, runs: list[TrainingRun], evaluations: dict,
                     task_id: str) -> dict[str, int]:
    """This task's episodes and evaluations and the experiment's state history, built from the
    session's state by the same mapping ``resimhub analytics snapshot`` uses, so a rebuild from the
    database later writes exactly these rows."""
    session = object_session(experiment)
    return snapshots.write_batches(snapshots_dir,
                                   snapshot_rows.experiment_batches(session, experiment, task_ids=[task_id]))
