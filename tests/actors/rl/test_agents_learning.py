"""The agents really learn: CartPole-v1 solved for at least 4 of 5 seeds within each agent's
documented budget (``DEFAULT_TIMESTEPS``), FrozenLake and Taxi solved by tabular Q-learning.

"Solved" is the greedy policy's mean return over 100 evaluation episodes on fresh seeds
(10_000..10_099) of at least 475. Training is checked every few thousand steps with a 20-episode
greedy evaluation on other seeds (20_000..20_019) and stops at the first pass, as the benchmark
does; the 100-episode confirmation then decides. The seeds of training, checking and
confirmation never overlap.
"""

from __future__ import annotations

import pytest

from actors.rl.agents import get_agent
from actors.rl.evaluation import evaluate

CARTPOLE = "CartPole-v1"
SOLVED = 475.0
CONFIRM_SEED = 10_000
CHECK_SEED = 20_000
CHECK_EVERY = {"PPO": 2_500, "A2C": 5_000, "DQN": 5_000, "CEM": 10_000}
SEEDS = range(5)


def _train_until_solved(name: str, seed: int):
    def check(timesteps, policy) -> bool:
        return evaluate(policy, CARTPOLE, 20, seed=CHECK_SEED).mean >= SOLVED

    return get_agent(name).train(CARTPOLE, seed=seed, check=check, check_every=CHECK_EVERY[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["PPO", "A2C", "DQN", "CEM"])
def test_solves_cartpole_within_budget(name):
    budget = get_agent(name).DEFAULT_TIMESTEPS
    outcomes = []
    for seed in SEEDS:
        result = _train_until_solved(name, seed)
        mean = evaluate(result.policy, CARTPOLE, 100, seed=CONFIRM_SEED).mean
        outcomes.append((seed, result.timesteps, round(result.wall_time_s, 2), mean))
        # A run may overshoot the budget only by its last update's batch.
        assert result.timesteps <= budget + 30_000
    solved = [o for o in outcomes if o[3] >= SOLVED]
    assert len(solved) >= 4, f"{name} (seed, steps, seconds, mean): {outcomes}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["PPO", "A2C", "CEM"])
def test_final_policy_solves_cartpole(name):
    """Without early stopping: the policy a plain ``train`` call returns after the full default
    budget (what the pipeline stores) is itself solved. (DQN's final policy is not reliably
    stable on CartPole, as is well known for DQN, so it is held to the check protocol above.)"""
    outcomes = []
    for seed in SEEDS:
        result = get_agent(name).train(CARTPOLE, seed=seed)
        outcomes.append((seed, evaluate(result.policy, CARTPOLE, 100, seed=CONFIRM_SEED).mean))
    assert sum(mean >= SOLVED for _, mean in outcomes) >= 4, f"{name} (seed, mean): {outcomes}"


@pytest.mark.slow
def test_qlearning_solves_deterministic_frozenlake():
    kwargs = {"is_slippery": False}
    for seed in SEEDS:
        result = get_agent("QLEARNING").train("FrozenLake-v1", seed=seed, total_timesteps=10_000,
                                              env_kwargs=kwargs)
        ev = evaluate(result.policy, "FrozenLake-v1", 100, seed=CONFIRM_SEED, env_kwargs=kwargs)
        assert ev.mean == 1.0, f"seed {seed}: success rate {ev.mean}"


@pytest.mark.slow
def test_qlearning_solves_taxi():
    for seed in SEEDS:
        result = get_agent("QLEARNING").train("Taxi-v4", seed=seed)
        ev = evaluate(result.policy, "Taxi-v4", 100, seed=CONFIRM_SEED)
        assert ev.mean >= 7.0, f"seed {seed}: mean return {ev.mean}"
