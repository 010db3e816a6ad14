"""The network agents train on Discrete observations, read one-hot, and the policy they export reads
them the same way wherever it is evaluated: in the worker, from its file, and in the sandbox."""

import numpy as np
import pytest

from actors.rl.agents import agent_supports, get_agent
from actors.rl.errors import PolicyMismatchError
from actors.rl.evaluation import evaluate
from actors.rl.modelfiles import load_policy
from actors.rl.policy import check_policy_spaces, save_policy
from actors.rl.sandbox import open_policy

ENV, KW = "FrozenLake-v1", {"is_slippery": False}


@pytest.fixture(scope="module")
def trained():
    return get_agent("PPO").train(ENV, {}, seed=0, total_timesteps=20_000, env_kwargs=KW)


def test_the_network_agents_accept_discrete_observations():
    import gymnasium as gym

    obs, act = gym.spaces.Discrete(16), gym.spaces.Discrete(4)
    assert [agent_supports(a, obs, act) for a in ("PPO", "A2C", "DQN", "CEM")] == [None] * 4


@pytest.mark.parametrize("agent,steps,hp", [("PPO", 20_000, {}), ("A2C", 20_000, {}),
                                            ("DQN", 10_000, {"learning_starts": 500, "exploration_fraction": 0.5})])
def test_they_learn_the_non_slippery_frozen_lake(agent, steps, hp):
    result = get_agent(agent).train(ENV, hp, seed=0, total_timesteps=steps, env_kwargs=KW)
    assert result.policy.describe()["obs_encoding"] == "one-hot" and result.policy.n_inputs == 16
    assert evaluate(result.policy, ENV, 10, 100, env_kwargs=KW).mean == 1.0


def test_the_saved_policy_acts_the_same_loaded_and_sandboxed(trained, tmp_path):
    path = tmp_path / "ppo-frozenlake.npz"
    save_policy(trained.policy, path, {"env_id": ENV, "env_kwargs": KW})
    states = np.arange(16)
    expected = trained.policy.act(states)
    for env_id in (ENV, None):
        loaded = load_policy(path, env_id=env_id).policy
        assert loaded.describe()["obs_encoding"] == "one-hot"
        assert np.array_equal(loaded.act(states), expected)
    with open_policy(path, env_id=ENV) as sandboxed:
        assert np.array_equal(sandboxed.act(states), expected)
        assert evaluate(sandboxed, ENV, 5, 100, env_kwargs=KW).mean == 1.0


def test_encodings_that_do_not_fit_are_refused_naming_both_sides(trained):
    import gymnasium as gym

    with pytest.raises(PolicyMismatchError, match="discrete states"):
        check_policy_spaces(trained.policy, gym.spaces.Box(-1, 1, (16,)), gym.spaces.Discrete(4))
    with pytest.raises(PolicyMismatchError, match="one-hot inputs for 16 states"):
        check_policy_spaces(trained.policy, gym.spaces.Discrete(64), gym.spaces.Discrete(4))
    with pytest.raises(PolicyMismatchError, match="outside"):
        trained.policy.act(np.array([16]))
