"""A retrained experiment counts once on the leaderboards: with its latest training's runs."""

from datetime import timedelta

import numpy as np
import pytest

from analytics import reports
from analytics.snapshots import Batch, write_batch
from tests.analytics.synthetic import T0, experiment


@pytest.fixture
def folder(tmp_path):
    # Experiment 1 (one seed, 10 evaluation episodes) trained three times; experiment 2 once.
    for i, task_id in enumerate([None, "retrain1-task", "retrain2-task"]):
        experiment(tmp_path, 1, "CEM", seeds=(0,), when=T0 + timedelta(hours=i), task_id=task_id, first_run=10 * i,
                   eval_returns={0: np.full(10, 100.0 * (i + 1))})
    experiment(tmp_path, 2, "PPO", seeds=(0, 1), when=T0 + timedelta(hours=1))
    return tmp_path


def _board(folder, **kwargs):
    (board,) = reports.leaderboards(folder, env="CartPole-v1", **kwargs)["leaderboards"]
    return board


def test_only_the_latest_training_of_an_experiment_counts_for_the_agents(folder):
    agents = {a["agent"]: a for a in _board(folder)["agents"]}
    cem = agents["CEM"]
    assert (cem["runs"], cem["experiments"], cem["evaluation_episodes"]) == (1, 1, 10)
    assert cem["iqm"] == pytest.approx(300.0)  # the third training's returns, not a blend of three
    assert agents["PPO"]["runs"] == 2
    pair = reports.compare_agents(folder, "CartPole-v1")["pairs"][0]
    assert {pair["a"]: pair["runs_a"], pair["b"]: pair["runs_b"]} == {"CEM": 1, "PPO": 2}


def test_superseded_models_leave_the_model_board_unless_benchmarked(folder):
    models = {m["model_id"]: m for m in _board(folder)["models"]}
    assert "model-1-0" not in models and "model-1-0-retrain1-task" not in models
    assert models["model-1-0-retrain2-task"]["superseded"] is False
    # A benchmark of a superseded model is a measurement of that file: it stays, marked.
    when = T0 + timedelta(hours=5)
    rows = [{"source": "benchmark", "task_id": "bench-task", "model_id": "model-1-0", "phase": "eval",
             "evaluation_id": "bench-1", "episode": i, "return": 50.0, "length": 10, "recorded_at": when}
            for i in range(4)]
    write_batch(folder, Batch("episodes", "evaluation-bench-1", "CartPole-v1", when, rows))
    write_batch(folder, Batch("evaluations", "evaluation-bench-1", "CartPole-v1", when, [
        {"source": "benchmark", "evaluation_id": "bench-1", "task_id": "bench-task", "model_id": "model-1-0",
         "episodes": 4, "seed": 0, "mode": "exact", "mean": 50.0, "std": 0.0, "evaluated_at": when}]))
    entry = {m["model_id"]: m for m in _board(folder)["models"]}["model-1-0"]
    assert entry["superseded"] is True and entry["episodes"] == 4 and entry["evaluations"] == 1


def test_with_since_an_experiment_s_latest_training_is_judged_over_all_time(folder):
    # Since the second training: the third is still the only one that counts.
    cem = {a["agent"]: a for a in _board(folder, since=T0 + timedelta(minutes=30))["agents"]}["CEM"]
    assert cem["runs"] == 1 and cem["iqm"] == pytest.approx(300.0)
    assert reports.superseded_models(folder, "CartPole-v1") == {"model-1-0", "model-1-0-retrain1-task"}
    stats = reports.model_statistics(folder, env="CartPole-v1")
    assert "model-1-0" not in set(stats.model_id)
    assert "model-1-0" in set(reports.model_statistics(folder, env="CartPole-v1", include_superseded=True).model_id)
