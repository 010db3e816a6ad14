"""SAC and TD3 really learn continuous control, and what they learn scores the same through the
hub's pipeline as at the end of training.

Pendulum-v1: a random policy scores about -1,200 per episode, RL-Zoo's tuned SAC about -150 after
20,000 steps. Here, with two layers of 64 (the defaults are SB3's larger networks, which cost more
time than a test should) and 10,000 steps, at least 4 of 5 seeds must end better than -250 over 10
greedy evaluation episodes. The five seeds train in two processes, one per core.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import pytest

from actors.rl.agents import get_agent
from actors.rl.evaluation import evaluate

SMALL = {"hidden_sizes": [64, 64], "batch_size": 128}
BUDGET = {"SAC": (10_000, SMALL), "TD3": (10_000, {**SMALL, "learning_starts": 1_000})}


def _score(agent: str, seed: int) -> float:
    steps, hp = BUDGET[agent]
    result = get_agent(agent).train("Pendulum-v1", hp, seed=seed, total_timesteps=steps)
    return evaluate(result.policy, "Pendulum-v1", 10, 1_000 + seed).mean


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["SAC", "TD3"])
def test_four_of_five_seeds_learn_pendulum(agent):
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        scores = list(pool.map(partial(_score, agent), range(5)))
    assert sum(score > -250 for score in scores) >= 4, scores


@pytest.fixture
def pendulum(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "Pendulum-v1"}).json()["task_id"])
    return hub


@pytest.mark.parametrize("agent", ["SAC", "TD3"])
def test_a_continuous_agent_through_the_pipeline_scores_the_same_on_the_benchmark(pendulum, agent):
    hub = pendulum
    body = {"name": "pendulum", "env_name": "Pendulum-v1", "agent": agent, "total_timesteps": 1_500,
            "eval_episodes": 3, "eval_seed": 77,
            "hyperparams": {"hidden_sizes": [16, 16], "batch_size": 32, "learning_starts": 300}}
    r = hub.client.post("/api/experiments", json=body)
    assert r.status_code == 201, r.text
    exp_id = r.json()["id"]
    task = hub.wait_task(hub.client.post(f"/api/experiments/{exp_id}/train").json()["task_id"], timeout=300)
    assert task["status"] == "succeeded", task
    results = hub.client.get(f"/api/experiments/{exp_id}").json()["results"]
    model_id = results["runs"][0]["model_id"]
    r = hub.client.post("/benchmark/run", json={"model_id": model_id, "episodes": 3, "seed": 77, "wait": 60})
    assert r.status_code == 200, r.text
    run = r.json()["result"]
    assert run["episodes"] == results["evaluation"]["episodes"] == 3
    assert run["mean_reward"] == pytest.approx(results["evaluation"]["mean"], rel=1e-12), (run, results["evaluation"])
    model = hub.client.get(f"/benchmark/models/{model_id}").json()
    assert model["shapes"]["policy"]["action_transform"] == "tanh-rescale"  # tanh(mean), rescaled


def test_an_agent_for_continuous_actions_is_refused_on_discrete_ones(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    r = hub.client.post("/api/experiments", json={"name": "x", "env_name": "CartPole-v1", "agent": "SAC"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "agent_env_mismatch"
    assert "Box" in r.json()["error"]["message"]
