"""The analyses on generated snapshots whose answers are known."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from actors.rl import stats as engine
from analytics import reports
from analytics.errors import NotEnoughData
from tests.analytics.synthetic import T0, experiment


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    experiment(tmp_path, 1, "CEM", when=T0,
               eval_returns={s: np.full(10, 500.0 - s) for s in (0, 1)})
    experiment(tmp_path, 2, "PPO", seeds=(0, 1, 2), when=T0 + timedelta(hours=1),
               eval_returns={s: np.round(rng.normal(300 + 10 * s, 20, 10)) for s in (0, 1, 2)})
    experiment(tmp_path, 3, "PPO", env="Acrobot-v1", threshold=-100.0, when=T0 + timedelta(hours=2))
    return tmp_path


def test_recent_is_newest_first_with_a_summary_over_all_matches(folder):
    body = reports.recent(folder, limit=2)
    assert [e["id"] for e in body["experiments"]] == [3, 2]
    assert body["summary"]["total_experiments"] == 3
    assert body["summary"]["avg_duration"] == pytest.approx(np.mean([61.0, 62.0, 63.0]))
    first = body["experiments"][0]
    assert first["status"] == "completed" and first["agent"] == "PPO" and first["updated_at"].endswith("Z")
    assert reports.recent(folder, agent="CEM")["summary"]["total_experiments"] == 1
    assert reports.recent(folder, env="Acrobot-v1")["summary"]["total_experiments"] == 1
    since = reports.recent(folder, since=T0 + timedelta(minutes=30))
    assert [e["id"] for e in since["experiments"]] == [3, 2]
    assert reports.recent(folder / "nowhere") == {
        "summary": {"total_experiments": 0, "avg_reward": None, "avg_duration": None}, "experiments": []}


def test_one_experiment_curve_convergence_and_returns(tmp_path):
    # seed 0 crosses 475 (window 100) at episode 149; seed 1 never does
    ramp = np.concatenate([np.zeros(100), np.full(100, 500.0)])
    experiment(tmp_path, 7, "CEM", train_returns={0: ramp, 1: np.full(200, 100.0)}, lengths=5)
    body = reports.experiment(tmp_path, 7, bins=10)
    assert body["agent"] == "CEM" and body["status"] == "completed" and body["episodes"] == 400
    assert body["average_return"] == pytest.approx((ramp.sum() + 200 * 100) / 400)
    assert body["final_training_return"] == pytest.approx((500 + 100) / 2)
    assert body["convergence_steps"] == {"0": 5 * 195, "1": None} and body["convergence_step"] is None
    curve = body["learning_curve"]
    assert len(curve) == 10 and curve[-1]["step"] == 1000 and curve[0]["seeds"] == 2
    assert curve[0]["mean_return"] == pytest.approx(50.0) and curve[-1]["max_return"] == 500.0
    assert [h["status"] for h in body["history"]] == ["created", "training", "completed"]
    assert body["evaluations"][0]["mean"] == 100.0
    assert reports.experiment(tmp_path, 8) is None


def test_convergence_uses_the_moving_average_and_the_threshold():
    episodes = pd.DataFrame({"seed": 0, "episode": range(6), "step": [10, 20, 30, 40, 50, 60],
                             "return": [0.0, 10.0, 10.0, 10.0, 10.0, 10.0]})
    assert reports.convergence(episodes, 9.0, window=3)["convergence_step"] == 40
    assert reports.convergence(episodes, 9.0, window=100)["convergence_step"] is None  # mean of all 6 < 9
    assert reports.convergence(episodes, None)["convergence_step"] is None


def test_agent_leaderboard_is_over_runs_with_an_interval(folder):
    (board,) = [b for b in reports.leaderboards(folder, env="CartPole-v1")["leaderboards"]]
    agents = board["agents"]
    assert [a["agent"] for a in agents] == ["CEM", "PPO"] and [a["rank"] for a in agents] == [1, 2]
    cem, ppo = agents
    assert cem["runs"] == 2 and cem["iqm"] == pytest.approx(499.5) and cem["evaluation_episodes"] == 20
    assert ppo["ci95"][0] <= ppo["iqm"] <= ppo["ci95"][1]
    models = board["models"]
    assert len(models) == 5 and models[0]["model_id"] == "model-1-0" and models[0]["episodes"] == 10
    assert models[0]["model_name"] == "CEM seed 0" and models[0]["agent"] == "CEM"


def test_model_statistics_match_a_direct_computation(folder):
    table = reports.model_statistics(folder).set_index(["env_name", "model_id"])
    from analytics import readers

    episodes = readers.read(folder, "episodes")
    evals = episodes[episodes.phase == "eval"]
    for (env, model), group in evals.groupby(["env_name", "model_id"]):
        row = table.loc[(env, model)]
        r = group["return"].to_numpy()
        assert row["count"] == r.size and row["mean"] == pytest.approx(r.mean()) and row["std"] == pytest.approx(
            r.std())
        assert row["median"] == pytest.approx(np.median(r)) and row["iqm"] == pytest.approx(engine.iqm(r))
    assert set(reports.model_statistics(folder, agent="CEM").model_id) == {"model-1-0", "model-1-1"}


def test_agents_are_compared_across_seeds(folder):
    body = reports.compare_agents(folder, "CartPole-v1")
    (pair,) = body["pairs"]
    assert (pair["a"], pair["b"], pair["runs_a"], pair["runs_b"]) == ("CEM", "PPO", 2, 3)
    assert pair["probability_of_improvement"] == 1.0 and pair["ci95"] == [1.0, 1.0]
    with pytest.raises(NotEnoughData, match="DQN"):
        reports.compare_agents(folder, "CartPole-v1", ["CEM", "DQN"])
    with pytest.raises(NotEnoughData):
        reports.compare_agents(folder, "Acrobot-v1")
