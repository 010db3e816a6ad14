"""Environment descriptions and the errors for ids that cannot be built."""

from __future__ import annotations

import importlib.util
import json

import pytest

from actors.rl.envspec import close_env_matches, describe_env, env_spaces, extra_for, make_env, space_to_dict
from actors.rl.errors import EnvSpecError


def test_describe_cartpole():
    d = describe_env("CartPole-v1", seed=3)
    json.dumps(d, allow_nan=False)
    assert d["env_id"] == "CartPole-v1" and d["version"] == 1
    assert d["observation_space"]["type"] == "Box" and d["observation_space"]["shape"] == [4]
    assert d["observation_space"]["dtype"] == "float32"
    assert d["observation_space"]["high"] is None  # infinite velocity bounds are not listed
    assert d["action_space"] == {"type": "Discrete", "shape": [], "dtype": "int64", "n": 2, "start": 0}
    assert d["reward_threshold"] == 475.0 and d["max_episode_steps"] == 500
    assert d["entry_point"].endswith("CartPoleEnv") and d["vector_entry_point"].endswith("CartPoleVectorEnv")
    assert d["nondeterministic"] is False and d["smoke_test"]["steps"] == 5


def test_describe_continuous_env_lists_small_finite_bounds():
    d = describe_env("Pendulum-v1")
    assert d["action_space"]["low"] == [-2.0] and d["action_space"]["high"] == [2.0]
    assert d["observation_space"]["bounded"] is True


@pytest.mark.parametrize("bad, expected", [("CartPol-v1", "CartPole-v1"), ("cartpole-v1", "CartPole-v1"),
                                           ("CartPole-v7", "CartPole-v1"), ("Pendulm-v1", "Pendulum-v1")])
def test_unknown_ids_name_close_matches(bad, expected):
    with pytest.raises(EnvSpecError) as err:
        describe_env(bad)
    assert expected in err.value.close_matches
    assert err.value.code == "unknown_environment" and err.value.status == 422
    assert expected in str(err.value)
    assert expected in close_env_matches(bad)


def test_nonsense_id_has_no_matches_but_a_clear_message():
    with pytest.raises(EnvSpecError) as err:
        make_env("Zzzzqqq-v0")
    assert err.value.close_matches == []
    assert "Zzzzqqq-v0" in str(err.value)


def test_missing_namespace_is_a_dependency_problem():
    with pytest.raises(EnvSpecError) as err:
        make_env("ALE/Pong-v5")
    assert err.value.code == "missing_dependency"
    assert "atari" in str(err.value).lower()


def test_the_box2d_extra_makes_lunarlander_available():
    # The test extra installs resimhub[box2d], as a user's pip install -e '.[box2d]' would.
    spec = describe_env("LunarLander-v3", seed=0)
    assert spec["observation_space"]["shape"] == [8] and spec["action_space"]["n"] == 4
    assert extra_for("LunarLander-v3") == "box2d" and extra_for("BipedalWalker-v3") == "box2d"
    assert extra_for("HalfCheetah-v5") == "mujoco" and extra_for("CartPole-v1") is None


def test_an_env_of_a_missing_extra_names_the_extra_to_install():
    if importlib.util.find_spec("mujoco") is not None:  # installed: the task builds
        assert describe_env("HalfCheetah-v5", seed=0)["observation_space"]["shape"] == [17]
        return
    with pytest.raises(EnvSpecError) as err:
        describe_env("HalfCheetah-v5")
    assert err.value.code == "missing_dependency" and err.value.extra == "mujoco"
    assert "pip install -e '.[mujoco]'" in str(err.value)
    assert err.value.to_dict()["details"]["extra"] == "mujoco"


def test_bad_kwargs_are_reported():
    with pytest.raises(EnvSpecError) as err:
        make_env("CartPole-v1", {"no_such_option": 1})
    assert err.value.code == "bad_env_kwargs"


def test_env_spaces_and_space_to_dict():
    obs, act = env_spaces("FrozenLake-v1")
    assert space_to_dict(obs)["n"] == 16 and space_to_dict(act)["n"] == 4
    assert env_spaces("FrozenLake-v1") is env_spaces("FrozenLake-v1")
