"""Snapshot folders made of generated experiments, written through the real writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from analytics.snapshots import Batch, write_batch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def experiment(snapshots, experiment_id: int, agent: str, *, env: str = "CartPole-v1", seeds=(0, 1),
               train_returns=None, eval_returns=None, lengths: int = 10, threshold: float | None = 475.0,
               when: datetime = T0, name: str | None = None, task_id: str | None = None,
               first_run: int = 0) -> dict:
    """One completed experiment. ``train_returns[seed]`` / ``eval_returns[seed]`` are sequences (by
    default a ramp and a constant); every episode lasts ``lengths`` steps. Another ``task_id`` for the
    same experiment is a retrain: its models get ids of their own, its runs start at ``first_run``."""
    retrain = task_id is not None
    task_id = task_id or f"{experiment_id:08d}-task"
    train_returns = train_returns or {s: np.linspace(10, 100, 50) + s for s in seeds}
    eval_returns = eval_returns or {s: np.full(10, 100.0 + s) for s in seeds}
    batch_id = f"experiment-{experiment_id}-{task_id[:8]}"
    episodes, evaluations = [], []
    for run, seed in enumerate(seeds):
        run_id = experiment_id * 100 + first_run + run
        model_id = f"model-{experiment_id}-{seed}" + (f"-{task_id}" if retrain else "")
        base = {"source": "experiment", "experiment_id": experiment_id, "task_id": task_id, "run_id": run_id,
                "model_id": model_id, "agent": agent, "seed": seed}
        for i, ret in enumerate(train_returns[seed]):
            episodes.append({**base, "phase": "train", "episode": i, "step": (i + 1) * lengths, "return": float(ret),
                             "length": lengths, "recorded_at": when})
        evals = np.asarray(eval_returns[seed], dtype=float)
        for i, ret in enumerate(evals):
            episodes.append({**base, "phase": "eval", "evaluation_id": f"eval-{run_id}", "episode": i,
                             "env_seed": 10_000 + i, "return": float(ret), "length": lengths, "recorded_at": when})
        evaluations.append({"source": "experiment", "evaluation_id": f"eval-{run_id}", "task_id": task_id,
                            "model_id": model_id, "model_name": f"{agent} seed {seed}", "experiment_id": experiment_id,
                            "run_id": run_id, "agent": agent, "run_seed": seed, "episodes": len(evals),
                            "seed": 10_000, "mode": "exact", "mean": float(evals.mean()), "std": float(evals.std()),
                            "median": float(np.median(evals)), "evaluated_at": when})
    finals = [e["mean"] for e in evaluations]
    base = {"experiment_id": experiment_id, "name": name or f"{agent} {experiment_id}", "agent": agent,
            "seeds": list(seeds), "reward_threshold": threshold, "created_at": when - timedelta(minutes=5)}
    history = [
        {**base, "status": "created", "recorded_at": when - timedelta(minutes=5)},
        {**base, "status": "training", "task_id": task_id, "recorded_at": when - timedelta(minutes=4)},
        {**base, "status": "completed", "task_id": task_id, "recorded_at": when, "mean_return": float(np.mean(finals)),
         "training_episodes": sum(len(v) for v in train_returns.values()), "training_duration_s": 60.0 + experiment_id,
         "iqm": float(np.mean(finals)), "ci_low": min(finals), "ci_high": max(finals)},
    ]
    for ds, rows, bid in (("episodes", episodes, batch_id), ("evaluations", evaluations, batch_id),
                          ("experiments", history, f"experiment-{experiment_id}")):
        write_batch(snapshots, Batch(ds, bid, env, when, rows))
    return {"task_id": task_id, "batch_id": batch_id, "finals": finals}
