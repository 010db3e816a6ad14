"""How an experiment's training task ends: the one place an experiment becomes ``completed`` or
``failed``, always together with its ``ExperimentCompleted`` / ``ExperimentFailed`` event in the
caller's transaction (the outbox), so the event log and webhooks see each outcome exactly once.

Callers hold the experiment's row lock (``session.get(Experiment, id, with_for_update=True)``),
taken before they change the task or the runs, so that several runs failing at once, or a failure
racing the aggregation, serialise on it and only the first one finishes the experiment.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from storage import outbox
from storage.events import Envelope, ExperimentCompleted, ExperimentFailed
from storage.models import Experiment

#: States an experiment's training task cannot leave (a new ``POST .../train`` starts over).
FINISHED = frozenset({"completed", "failed", "cancelled"})


def complete(session: Session, experiment: Experiment, *, task_id: str, results: dict[str, Any]) -> Envelope:
    """Record ``results`` (as :func:`actors.aggregation.experiment_results` builds them)."""
    experiment.status, experiment.results = "completed", results
    runs = results.get("runs") or []
    return outbox.record(session, ExperimentCompleted(
        experiment_id=experiment.id, task_id=task_id, env_name=results["env_name"], agent=results["agent"],
        mean_return=results["mean_return"], iqm=results["iqm"], ci95=list(results["ci95"]),
        statistics_over=results["statistics_over"], seeds=list(results["seeds"]),
        final_returns=list(results["final_returns"]),
        runs=[{"run_id": r["run_id"], "seed": r["seed"], "model_id": r["model_id"],
               "mean": (r.get("evaluation") or {}).get("mean"),
               "episodes": (r.get("evaluation") or {}).get("episodes")} for r in runs],
        episodes=int(sum((r.get("evaluation") or {}).get("episodes") or 0 for r in runs)),
        training_episodes=results["training_episodes"], timesteps=results["timesteps"],
        solved=results.get("solved"), reward_threshold=results.get("reward_threshold")))


def fail(session: Session, experiment: Experiment, *, task_id: str | None, stage: str, error: dict[str, Any],
         run_id: int | None = None) -> Envelope | None:
    """Fail the experiment unless its task already ended; returns the event, or None if it had."""
    if experiment.status in FINISHED:
        return None
    experiment.status = "failed"
    public = {k: error[k] for k in ("type", "code", "message", "details", "retryable") if k in error}
    return outbox.record(session, ExperimentFailed(
        experiment_id=experiment.id, task_id=task_id, stage=stage,
        reason=str(error.get("message") or error.get("code") or "failed"), error=public, run_id=run_id))
