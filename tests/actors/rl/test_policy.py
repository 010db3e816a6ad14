"""Greedy policies: shapes, dtypes, clipping, and the checks against an environment's spaces."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from actors.rl.errors import PolicyMismatchError
from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, Policy, TabularPolicy, check_policy_spaces, save_policy


def net(sizes, activation="tanh", seed=0) -> MLP:
    return MLP(sizes, activation, rng=np.random.default_rng(seed))


def test_discrete_head_is_argmax_of_the_network():
    mlp = net([4, 32, 3], "relu")
    policy = MLPPolicy(mlp, "discrete", (4,))
    obs = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    actions = policy.act(obs)
    assert actions.shape == (50,) and actions.dtype == np.int64
    np.testing.assert_array_equal(actions, mlp.forward(obs).argmax(axis=1))
    assert isinstance(policy, Policy)


def test_forward_agrees_with_mlp_forward_for_both_activations():
    obs = np.random.default_rng(2).normal(size=(7, 4))
    for activation in ("tanh", "relu"):
        mlp = net([4, 16, 16, 2], activation)
        np.testing.assert_allclose(MLPPolicy(mlp, "discrete", (4,)).forward(obs), mlp.forward(obs))


def test_box_head_is_the_clipped_mean():
    mlp = net([3, 8, 2])
    mlp.biases[-1][:] = [10.0, -10.0]  # push the mean outside the bounds
    policy = MLPPolicy(mlp, "box", (3,), action_low=np.array([-1.0, -2.0]), action_high=np.array([1.0, 2.0]))
    acts = policy.act(np.zeros((4, 3)))
    assert acts.shape == (4, 2)
    np.testing.assert_array_equal(acts, np.tile([1.0, -2.0], (4, 1)))


def test_observations_are_flattened_and_single_observations_accepted():
    mlp = net([6, 8, 2])
    policy = MLPPolicy(mlp, "discrete", (2, 3))
    obs = np.arange(12, dtype=np.float64).reshape(2, 2, 3)
    np.testing.assert_array_equal(policy.act(obs), mlp.forward(obs.reshape(2, 6)).argmax(axis=1))
    assert policy.act(obs[0]).shape == (1,)


def test_policy_follows_in_place_training_of_its_network():
    mlp = net([2, 2])
    policy = MLPPolicy(mlp, "discrete", (2,))
    mlp.weights[0][...] = [[1.0, 0.0], [0.0, 0.0]]
    assert policy.act(np.array([[1.0, 0.0]]))[0] == 0
    mlp.weights[0][...] = [[0.0, 1.0], [0.0, 0.0]]
    assert policy.act(np.array([[1.0, 0.0]]))[0] == 1


def test_obs_shape_must_match_the_network():
    with pytest.raises(PolicyMismatchError):
        MLPPolicy(net([4, 2]), "discrete", (5,))


def test_tabular_policy():
    q = np.array([[0.0, 1.0], [2.0, 1.0], [0.5, 0.5]])
    policy = TabularPolicy(q)
    np.testing.assert_array_equal(policy.act(np.array([0, 1, 2, 0])), [1, 0, 0, 1])
    assert policy.describe() == {"kind": "tabular", "head": "discrete", "obs_shape": [], "n_states": 3,
                                 "n_inputs": 3, "n_actions": 2}


def test_describe_is_json_safe_even_with_infinite_bounds():
    policy = MLPPolicy(net([3, 4, 1]), "box", (3,), np.array([-np.inf]), np.array([2.0]))
    d = policy.describe()
    json.dumps(d, allow_nan=False)
    assert d["sizes"] == [3, 4, 1] and d["action_dim"] == 1 and d["action_low"] == [None]
    assert d["activation"] == "tanh" and d["head"] == "box"


def test_check_policy_spaces_messages():
    cartpole = gym.make("CartPole-v1")
    pendulum = gym.make("Pendulum-v1")
    check_policy_spaces(MLPPolicy(net([4, 2]), "discrete", (4,)), cartpole.observation_space,
                        cartpole.action_space, "CartPole-v1")
    with pytest.raises(PolicyMismatchError, match=r"model outputs 3 action values but CartPole-v1 has Discrete\(2\)"):
        check_policy_spaces(MLPPolicy(net([4, 3]), "discrete", (4,)), cartpole.observation_space,
                            cartpole.action_space, "CartPole-v1")
    with pytest.raises(PolicyMismatchError, match="continuous actions"):
        check_policy_spaces(MLPPolicy(net([3, 1]), "discrete", (3,)), pendulum.observation_space,
                            pendulum.action_space, "Pendulum-v1")
    with pytest.raises(PolicyMismatchError, match="Q-table"):
        check_policy_spaces(TabularPolicy(np.zeros((16, 4))), cartpole.observation_space,
                            cartpole.action_space, "CartPole-v1")


def test_save_policy_is_atomic_and_leaves_no_temp_files(tmp_path):
    policy = MLPPolicy(net([4, 8, 2]), "discrete", (4,))
    target = tmp_path / "sub" / "model.npz"
    save_policy(policy, target, {"env_id": "CartPole-v1"})
    save_policy(policy, target, {"env_id": "CartPole-v1", "note": "overwritten"})
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.npz"]
    with np.load(target, allow_pickle=False) as z:
        manifest = json.loads(str(z["__manifest__"][()]))
    assert manifest["note"] == "overwritten"


def test_save_policy_failure_keeps_the_old_file(tmp_path, monkeypatch):
    policy = MLPPolicy(net([4, 8, 2]), "discrete", (4,))
    target = tmp_path / "model.npz"
    save_policy(policy, target, {})
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        save_policy(policy, target, {})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
