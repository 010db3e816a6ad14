"""Evaluation runs exactly N episodes, reproducibly, and reports plain-number metrics."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from actors.rl.errors import EnvSpecError, PolicyMismatchError, RLError
from actors.rl.evaluation import EvaluationResult, evaluate, single_env_loop
from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, TabularPolicy


def cartpole_policy(seed: int = 3) -> MLPPolicy:
    # An untrained network whose episodes still vary in length from seed to seed.
    return MLPPolicy(MLP([4, 64, 64, 2], "relu", rng=np.random.default_rng(seed)), "discrete", (4,))


class _PlateauPolicy:
    """Balances CartPole reasonably (push toward the pole's lean), so episodes run long."""

    head, obs_shape, n_inputs, n_outputs = "discrete", (4,), 4, 2

    def act(self, obs):
        obs = np.asarray(obs).reshape(-1, 4)
        return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)

    def describe(self):
        return {"kind": "rule"}


class _SeedLengthEnv(gym.Env):
    """Episodes last 40 steps when the env was last seeded with an even seed, else 1 step.

    Lets a test see whether an evaluator favours short episodes: the sub-environment with short
    episodes finishes far more of them in the same time.
    """

    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.long = True
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.long = seed % 2 == 0
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(4, np.float32), 1.0, self.t >= (40 if self.long else 1), False, {}


if "ResimTest/SeedLength-v0" not in gym.envs.registry:
    gym.register("ResimTest/SeedLength-v0", entry_point=_SeedLengthEnv, max_episode_steps=100)


def test_exact_mode_equals_a_plain_single_env_loop():
    policy = cartpole_policy()
    returns, lengths = single_env_loop(policy, "CartPole-v1", 40, seed=1000)
    assert len(set(lengths)) > 3  # the comparison means something only if episodes differ
    for num_envs in (1, 7, 64):
        res = evaluate(policy, "CartPole-v1", 40, seed=1000, mode="exact", num_envs=num_envs)
        assert res.returns == returns
        assert res.lengths == lengths
        assert res.num_envs == min(num_envs, 40)


def test_exact_mode_episode_i_uses_seed_plus_i():
    policy = cartpole_policy()
    whole = evaluate(policy, "CartPole-v1", 12, seed=500)
    tail = evaluate(policy, "CartPole-v1", 4, seed=508)
    assert whole.returns[8:] == tail.returns


def test_exact_mode_has_no_short_episode_bias():
    res = evaluate(_PlateauPolicy(), "ResimTest/SeedLength-v0", 6, seed=0, mode="exact", num_envs=2)
    assert res.lengths == [40, 1, 40, 1, 40, 1]


def test_fast_mode_gives_each_sub_env_a_fixed_quota():
    # Sub-env 0 is seeded 0 (long episodes), sub-env 1 seeded 1 (1-step episodes). Taking the first
    # four episodes to finish would give four short ones.
    res = evaluate(_PlateauPolicy(), "ResimTest/SeedLength-v0", 4, seed=0, mode="fast", num_envs=2)
    assert res.vectorization == "sync"
    assert res.lengths == [40, 40, 1, 1]
    assert res.episodes == 4 and len(res.returns) == 4


def test_fast_mode_uses_the_native_vector_env_and_is_deterministic():
    policy = _PlateauPolicy()
    a = evaluate(policy, "CartPole-v1", 50, seed=7, mode="fast", num_envs=8)
    b = evaluate(policy, "CartPole-v1", 50, seed=7, mode="fast", num_envs=8)
    assert a.vectorization == "vector_entry_point"
    assert a.returns == b.returns and len(a.returns) == 50
    assert a.total_steps == sum(a.lengths)
    assert all(1 <= n <= 500 for n in a.lengths)
    assert a.returns == [float(n) for n in a.lengths]  # CartPole pays 1 per step


def test_fast_and_exact_agree_in_distribution():
    policy = cartpole_policy()
    fast = evaluate(policy, "CartPole-v1", 300, seed=0, mode="fast")
    exact = evaluate(policy, "CartPole-v1", 300, seed=0, mode="exact")
    # Same policy, same dynamics, different initial states: the means must be close.
    assert abs(fast.mean - exact.mean) < 4 * (exact.std / np.sqrt(300) + fast.std / np.sqrt(300))


def test_box_actions_and_sync_fast_mode():
    policy = MLPPolicy(MLP([3, 16, 1], "tanh", rng=np.random.default_rng(0)), "box", (3,),
                       np.array([-2.0]), np.array([2.0]))
    exact = evaluate(policy, "Pendulum-v1", 3, seed=4)
    ref, _ = single_env_loop(policy, "Pendulum-v1", 3, seed=4)
    assert exact.returns == ref and exact.lengths == [200, 200, 200]
    fast = evaluate(policy, "Pendulum-v1", 3, seed=4, mode="fast")
    assert fast.vectorization == "sync" and fast.lengths == [200, 200, 200]


def test_tabular_policy_on_frozenlake():
    q = np.zeros((16, 4))
    q[:, 2] = 1.0  # always move right
    res = evaluate(TabularPolicy(q), "FrozenLake-v1", 10, seed=0, env_kwargs={"is_slippery": False})
    # Moving right along the hole-free top row reaches the corner and stays there until the limit.
    assert res.returns == [0.0] * 10 and res.lengths == [100] * 10
    ref, ref_len = single_env_loop(TabularPolicy(q), "FrozenLake-v1", 10, 0, env_kwargs={"is_slippery": False})
    assert res.lengths == ref_len


def test_result_is_json_safe_with_all_metrics():
    res = evaluate(cartpole_policy(), "CartPole-v1", 20, seed=1)
    assert isinstance(res, EvaluationResult)
    d = res.to_dict()
    json.loads(json.dumps(d, allow_nan=False))
    for key in ("returns", "lengths", "mean", "std", "median", "min", "max", "iqm", "ci95", "score",
                "mean_length", "latency_ms", "steps_per_second", "wall_time_s", "episodes", "seed", "mode",
                "env_id", "spec_id", "env_version", "gymnasium_version"):
        assert key in d, key
    assert d["episodes"] == 20 and len(d["returns"]) == 20 and d["env_version"] == 1
    assert d["mean"] == pytest.approx(np.mean(d["returns"])) and d["std"] == pytest.approx(np.std(d["returns"]))
    assert d["score"] == pytest.approx(d["mean"] - d["std"])
    assert all(type(v) is float for v in d["returns"]) and all(type(v) is int for v in d["lengths"])
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert d["latency_ms"] > 0 and d["steps_per_second"] > 0
    assert res.ci95 == evaluate(cartpole_policy(), "CartPole-v1", 20, seed=1).ci95  # seeded bootstrap


def test_progress_is_reported_per_episode():
    seen = []
    evaluate(cartpole_policy(), "CartPole-v1", 5, seed=0, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 5) for i in range(1, 6)]


def test_mismatched_policy_and_unknown_env():
    expected = r"model expects 4 inputs but Acrobot-v1 observations have shape \(6,\)"
    with pytest.raises(PolicyMismatchError, match=expected):
        evaluate(cartpole_policy(), "Acrobot-v1", 3, seed=0)
    with pytest.raises(EnvSpecError) as err:
        evaluate(cartpole_policy(), "CartPol-v1", 3, seed=0, mode="fast")
    assert "CartPole-v1" in err.value.close_matches
    with pytest.raises(RLError):
        evaluate(cartpole_policy(), "CartPole-v1", 0, seed=0)
    with pytest.raises(RLError):
        evaluate(cartpole_policy(), "CartPole-v1", 3, seed=0, mode="turbo")  # type: ignore[arg-type]
