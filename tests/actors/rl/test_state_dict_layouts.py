"""Picking the acting network of a bare state dict by role (actors/rl/modelfiles/layouts.py)."""

from __future__ import annotations

import numpy as np
import pytest

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.modelfiles import load_policy
from actors.rl.modelfiles.layouts import choose_acting
from actors.rl.nn import MLP


def _net(sizes, seed, activation="relu") -> MLP:
    return MLP(list(sizes), activation, rng=np.random.default_rng(seed))


def _sd(net: MLP, prefix: str, indices=None) -> dict[str, np.ndarray]:
    out = {}
    for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        name = f"{prefix}.{2 * k}" if indices is None else f"{prefix}{indices[k]}"
        out[f"{name}.weight"] = np.ascontiguousarray(w.T).astype(np.float32)
        out[f"{name}.bias"] = b.astype(np.float32)
    return out


def _obs(n=64):
    return np.random.default_rng(9).uniform(-0.5, 0.5, (n, 4)).astype(np.float32)


def test_sb3_dqn_online_and_target_are_not_merged(tmp_path):
    # The bug this replaces: both stacks ended in "q_net" and the last one read won.
    online, target = _net((4, 16, 2), 1), _net((4, 16, 2), 2)
    state = {**_sd(online, "q_net.q_net"), **_sd(target, "q_net_target.q_net")}
    path = tmp_path / "dqn.npz"
    np.savez(path, **state)
    loaded = load_policy(path, env_id="CartPole-v1")
    assert loaded.manifest["layers"] == ["q_net.q_net.0", "q_net.q_net.2"]
    np.testing.assert_array_equal(loaded.policy.act(_obs()), online.forward(_obs()).argmax(1))
    assert not np.array_equal(online.forward(_obs()).argmax(1), target.forward(_obs()).argmax(1))
    # the target network last in the file changes nothing
    np.savez(path, **{**_sd(target, "q_net_target.q_net"), **_sd(online, "q_net.q_net")})
    np.testing.assert_array_equal(load_policy(path).policy.act(_obs()), online.forward(_obs()).argmax(1))


def test_sb3_actor_critic_chains_policy_net_and_action_net():
    pi = _net((4, 8, 8, 2), 3, "tanh")
    state = {"mlp_extractor.policy_net.0.weight": pi.weights[0].T, "mlp_extractor.policy_net.0.bias": pi.biases[0],
             "mlp_extractor.policy_net.2.weight": pi.weights[1].T, "mlp_extractor.policy_net.2.bias": pi.biases[1],
             "action_net.weight": pi.weights[2].T, "action_net.bias": pi.biases[2],
             "mlp_extractor.value_net.0.weight": np.zeros((8, 4)), "mlp_extractor.value_net.0.bias": np.zeros(8),
             "value_net.weight": np.zeros((1, 8)), "value_net.bias": np.zeros(1)}
    acting = choose_acting(state)
    assert acting.layout == "sb3-actor-critic" and acting.activation[0] == "tanh"
    assert acting.paths == ["mlp_extractor.policy_net.0", "mlp_extractor.policy_net.2", "action_net"]


def test_sb3_sac_and_td3_layouts_squash():
    sac = {"actor.latent_pi.0.weight": np.ones((8, 3)), "actor.latent_pi.0.bias": np.zeros(8),
           "actor.mu.weight": np.ones((1, 8)), "actor.mu.bias": np.zeros(1),
           "actor.log_std.weight": np.ones((1, 8)), "actor.log_std.bias": np.zeros(1),
           "critic.qf0.0.weight": np.ones((8, 4)), "critic_target.qf0.0.weight": np.ones((8, 4))}
    acting = choose_acting(sac)
    assert acting.layout == "sb3-sac" and acting.squash and acting.paths == ["actor.latent_pi.0", "actor.mu"]
    td3 = {"actor.mu.0.weight": np.ones((8, 3)), "actor.mu.2.weight": np.ones((1, 8)),
           "actor_target.mu.0.weight": np.ones((8, 3)), "actor_target.mu.2.weight": np.ones((1, 8))}
    acting = choose_acting(td3)
    assert acting.layout == "sb3-td3" and acting.squash and acting.paths == ["actor.mu.0", "actor.mu.2"]


def test_sb3_gsde_and_cnn_are_refused():
    with pytest.raises(ModelFileError) as err:
        choose_acting({"actor.latent_pi.0.weight": np.ones((8, 3)), "actor.mu.0.weight": np.ones((1, 8)),
                       "actor.log_std": np.ones((8, 1))})
    assert err.value.code == "unsupported_policy" and "gSDE" in str(err.value)
    with pytest.raises(ModelFileError) as err:
        choose_acting({"features_extractor.cnn.0.weight": np.ones((32, 4, 8, 8)), "action_net.weight": np.ones((2, 8)),
                       "mlp_extractor.policy_net.0.weight": np.ones((8, 512))})
    assert err.value.code == "unsupported_policy" and "NatureCNN" in str(err.value)


def test_several_unrecognised_stacks_are_refused_with_the_candidates(tmp_path):
    state = {**_sd(_net((4, 8, 2), 1), "encoder"), **_sd(_net((4, 8, 2), 2), "head")}
    path = tmp_path / "two.npz"
    np.savez(path, **state)
    with pytest.raises(ModelFileError) as err:
        load_policy(path, env_id="CartPole-v1")
    assert err.value.code == "ambiguous_layers" and err.value.status == 422
    assert err.value.details == {"candidates": ["encoder", "head"], "field": "prefix"}
    assert "'prefix' form field" in str(err.value)
    loaded = load_policy(path, env_id="CartPole-v1", prefix="head")
    assert loaded.manifest["layers"] == ["head.0", "head.2"]
    assert "prefix='head'" in loaded.manifest["acting_network"]["reason"]
    with pytest.raises(ModelFileError) as err:
        load_policy(path, prefix="nope")
    assert err.value.details["candidates"] == ["encoder", "head"]


def test_targets_and_critics_are_set_aside_by_name():
    acting = choose_acting({**_sd(_net((4, 8, 2), 1), "policy"), **_sd(_net((4, 8, 1), 2), "critic"),
                            **_sd(_net((4, 8, 2), 3), "target_policy")})
    assert acting.layout == "by-role" and acting.paths == ["policy.0", "policy.2"]
    assert acting.ignored == ["target_policy", "critic"]


def test_plain_sequential_keeps_the_relu_default_as_a_stated_assumption(tmp_path):
    path = tmp_path / "seq.npz"
    np.savez(path, **_sd(_net((4, 8, 2), 1), "net"))
    m = load_policy(path, env_id="CartPole-v1").manifest
    assert m["acting_network"]["layout"] == "sequential"
    assert m["assumptions"] == [{"name": "activation", "value": "relu", "reason": m["assumptions"][0]["reason"]}]
    assert "default" in m["assumptions"][0]["reason"]
    assert load_policy(path, env_id="CartPole-v1", activation="relu").manifest["assumptions"] == []


def test_head_is_an_assumption_without_an_environment(tmp_path):
    path = tmp_path / "seq.npz"
    np.savez(path, **_sd(_net((4, 8, 2), 1), "net"))
    names = [a["name"] for a in load_policy(path, activation="relu").manifest["assumptions"]]
    assert names == ["head"]


def test_action_scaling_option_for_bare_box_state_dicts(tmp_path):
    net = _net((3, 8, 1), 4, "tanh")
    path = tmp_path / "box.npz"
    np.savez(path, **_sd(net, "net"))
    obs = np.random.default_rng(1).uniform(-1, 1, (16, 3)).astype(np.float32)
    raw = net.forward(obs.astype(np.float64))
    clip = load_policy(path, env_id="Pendulum-v1", activation="tanh")
    assert clip.policy.describe()["action_transform"] == "clip"
    np.testing.assert_allclose(clip.policy.act(obs), np.clip(raw, -2, 2), rtol=1e-5, atol=1e-5)
    squash = load_policy(path, env_id="Pendulum-v1", activation="tanh", action_scaling="tanh")
    assert squash.policy.describe()["action_transform"] == "tanh-rescale"
    assert squash.manifest["acting_network"]["action_transform_source"] == "uploader"
    np.testing.assert_allclose(squash.policy.act(obs), 2 * np.tanh(raw), rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelFileError):
        load_policy(path, action_scaling="sigmoid")


def test_cleanrl_td3_actor(tmp_path):
    net = _net((3, 16, 16, 1), 5)
    state = _sd(net, "fc", indices=["1", "2", "_mu"])
    state.update(action_scale=np.array([2.0], np.float32), action_bias=np.array([0.0], np.float32))
    path = tmp_path / "actor.npz"
    np.savez(path, **state)
    loaded = load_policy(path, env_id="Pendulum-v1")
    assert loaded.manifest["acting_network"]["layout"] == "cleanrl-td3-actor"
    assert loaded.manifest["layers"] == ["fc1", "fc2", "fc_mu"]
    obs = np.random.default_rng(2).uniform(-1, 1, (16, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.policy.act(obs), 2.0 * np.tanh(net.forward(obs.astype(np.float64))),
                               rtol=1e-5, atol=1e-5)
    assert load_policy(path).policy.action_high.tolist() == [2.0]  # from the buffers, without an env
    state["action_scale"] = np.array([1.0], np.float32)
    np.savez(path, **state)
    with pytest.raises(PolicyMismatchError):
        load_policy(path, env_id="Pendulum-v1")


def test_squashed_policy_round_trips_in_the_native_format(tmp_path):
    from actors.rl.policy import MLPPolicy, save_policy

    net = _net((3, 8, 1), 6)
    policy = MLPPolicy(net, "box", (3,), action_low=[-2.0], action_high=[2.0], squash=True)
    save_policy(policy, tmp_path / "p.npz", {"env_id": "Pendulum-v1"})
    back = load_policy(tmp_path / "p.npz", env_id="Pendulum-v1").policy
    obs = np.random.default_rng(3).uniform(-1, 1, (8, 3)).astype(np.float32)
    assert back.describe()["action_transform"] == "tanh-rescale"
    np.testing.assert_array_equal(back.act(obs), policy.act(obs))
