"""Quick contract tests of every agent: short runs, progress, determinism, checkpoints, stopping."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from actors.rl.agents import AGENTS, Progress, TrainResult, agent_supports, common, get_agent
from actors.rl.errors import RLError
from actors.rl.evaluation import evaluate
from actors.rl.policy import MLPPolicy, TabularPolicy

# (env_id, env_kwargs, steps) per agent: enough steps for several updates, still well under a second.
QUICK = {
    "PPO": ("CartPole-v1", None, 3_000),
    "A2C": ("CartPole-v1", None, 3_000),
    "DQN": ("CartPole-v1", None, 3_000),
    "CEM": ("CartPole-v1", None, 3_000),
    "QLEARNING": ("FrozenLake-v1", {"is_slippery": False}, 3_000),
    "SAC": ("Pendulum-v1", None, 1_500),
    "TD3": ("Pendulum-v1", None, 1_500),
}
# Smaller settings for the DQN so its first training block happens inside a short run, and small
# networks for the off-policy agents, which take a gradient step at every environment step.
_SMALL_OFF_POLICY = {"hidden_sizes": [32, 32], "batch_size": 64, "learning_starts": 200}
QUICK_ARGS = {"DQN": {"learning_starts": 500, "train_frequency": 128, "gradient_steps": 16},
              "SAC": _SMALL_OFF_POLICY, "TD3": _SMALL_OFF_POLICY}


def quick_train(name, seed=0, total=None, **kwargs):
    env_id, env_kwargs, steps = QUICK[name]
    return get_agent(name).train(env_id, QUICK_ARGS.get(name), seed=seed,
                                 total_timesteps=steps if total is None else total,
                                 env_kwargs=env_kwargs, **kwargs)


@pytest.mark.parametrize("name", list(AGENTS))
def test_short_run_reports_progress_and_result(name):
    seen: list[Progress] = []
    result = quick_train(name, progress=seen.append)
    assert isinstance(result, TrainResult)
    assert seen, "progress never fired"
    steps = [p.timesteps for p in seen]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert all(0.0 <= p.fraction <= 1.0 and p.total_timesteps == QUICK[name][2] for p in seen)
    assert seen[-1].episodes <= result.episodes
    assert result.timesteps >= QUICK[name][2]
    assert result.episodes == len(result.episode_returns) == len(result.episode_lengths) > 0
    assert sum(result.episode_lengths) <= result.timesteps
    assert not result.stopped and result.resumed_from is None
    assert result.wall_time_s > 0
    config = json.loads(json.dumps(result.config))
    assert config["agent"] == name and config["seed"] == 0 and config["env_id"] == QUICK[name][0]
    policy_type = TabularPolicy if name == "QLEARNING" else MLPPolicy
    assert isinstance(result.policy, policy_type)
    ev = evaluate(result.policy, QUICK[name][0], 3, seed=1, env_kwargs=QUICK[name][1])
    assert len(ev.returns) == 3


@pytest.mark.parametrize("name", list(AGENTS))
def test_same_seed_same_learning_curve(name):
    a = quick_train(name, seed=3)
    b = quick_train(name, seed=3)
    c = quick_train(name, seed=4)
    assert a.episode_returns == b.episode_returns
    assert a.episode_lengths == b.episode_lengths
    assert a.timesteps == b.timesteps
    assert a.episode_returns != c.episode_returns  # (Pendulum's episodes all last 200 steps)
    obs = np.random.default_rng(0).standard_normal((16, 3 if name in ("SAC", "TD3") else 4)) \
        if name != "QLEARNING" else np.arange(16)
    np.testing.assert_array_equal(a.policy.act(obs), b.policy.act(obs))


@pytest.mark.parametrize("name", list(AGENTS))
def test_checkpoint_and_resume(name, tmp_path):
    path = str(tmp_path / "ckpt.npz")
    first = quick_train(name, total=2_000, checkpoint_path=path, checkpoint_every=500)
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        assert meta["timesteps"] == first.timesteps and meta["agent"] == name
        assert data["episode_returns"].tolist() == first.episode_returns
    second = quick_train(name, total=4_000, checkpoint_path=path, checkpoint_every=500)
    assert second.resumed_from == first.timesteps
    assert second.timesteps >= 4_000
    assert second.episode_returns[: first.episodes] == first.episode_returns
    assert second.episodes > first.episodes
    assert list(tmp_path.iterdir()) == [tmp_path / "ckpt.npz"], "temporary files left behind"
    # A finished checkpoint resumes to an immediate return with the same history.
    third = quick_train(name, total=4_000, checkpoint_path=path)
    assert third.resumed_from == second.timesteps and third.episode_returns == second.episode_returns


def test_checkpoint_written_periodically(tmp_path):
    path = str(tmp_path / "ppo.npz")
    stamps = []

    def progress(p):
        if (tmp_path / "ppo.npz").exists():
            with np.load(path, allow_pickle=False) as data:
                stamps.append(json.loads(str(data["__meta__"]))["timesteps"])

    quick_train("PPO", total=3_000, checkpoint_path=path, checkpoint_every=1_000, progress=progress)
    assert len(set(stamps)) >= 2


def test_checkpoint_of_another_agent_is_refused(tmp_path):
    path = str(tmp_path / "ckpt.npz")
    quick_train("PPO", total=500, checkpoint_path=path)
    with pytest.raises(RLError, match="PPO"):
        quick_train("A2C", total=1_000, checkpoint_path=path)


@pytest.mark.parametrize("name", list(AGENTS))
def test_should_stop_returns_promptly(name, tmp_path):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) >= 3

    path = str(tmp_path / "stop.npz")
    result = quick_train(name, total=1_000_000, should_stop=should_stop, checkpoint_path=path)
    assert result.stopped
    assert result.timesteps < 50_000
    with np.load(path, allow_pickle=False) as data:
        assert json.loads(str(data["__meta__"]))["timesteps"] == result.timesteps


def test_check_hook_ends_training_and_is_not_timed():
    seen = []

    def check(timesteps, policy):
        seen.append(timesteps)
        assert isinstance(policy, MLPPolicy)
        return len(seen) == 2

    result = get_agent("ppo").train("CartPole-v1", total_timesteps=100_000, check=check, check_every=1_000)
    assert result.check_passed and not result.stopped
    assert len(seen) == 2 and result.timesteps == seen[-1] < 100_000


def test_registry_lookup_and_space_support():
    assert get_agent("ppo") is AGENTS["PPO"]
    assert get_agent("Q-Learning") is AGENTS["QLEARNING"]
    with pytest.raises(KeyError, match="PPO, A2C, DQN, CEM, QLEARNING, SAC, TD3"):
        get_agent("ddpg")
    cart = gym.make("CartPole-v1")
    pend = gym.make("Pendulum-v1")
    lake = gym.make("FrozenLake-v1")
    for name in ("PPO", "A2C", "DQN", "CEM"):
        assert agent_supports(name, cart.observation_space, cart.action_space) is None
        # Discrete observations are read one-hot (tests/actors/rl/test_discrete_observations.py);
        # other kinds (Blackjack's Tuple) are still refused, by name.
        assert agent_supports(name, lake.observation_space, lake.action_space) is None
        blackjack = gym.make("Blackjack-v1")
        assert "Box or Discrete observation" in agent_supports(name, blackjack.observation_space,
                                                               blackjack.action_space)
    for name in ("PPO", "A2C", "CEM"):
        assert agent_supports(name, pend.observation_space, pend.action_space) is None
    assert "Discrete action" in agent_supports("DQN", pend.observation_space, pend.action_space)
    assert agent_supports("QLEARNING", lake.observation_space, lake.action_space) is None
    assert "Discrete observations" in agent_supports("qlearning", cart.observation_space, cart.action_space)
    for module in AGENTS.values():
        assert isinstance(module.DEFAULT_TIMESTEPS, int) and module.DEFAULT_TIMESTEPS > 0
        assert module.Args().__doc__ is not None


def test_unsupported_environment_raises():
    with pytest.raises(RLError, match="Discrete observations"):
        get_agent("QLEARNING").train("CartPole-v1", total_timesteps=100)
    with pytest.raises(RLError, match="Discrete action"):
        get_agent("DQN").train("Pendulum-v1", total_timesteps=100)


def test_args_from_dict_and_unknown_keys():
    result = get_agent("PPO").train("CartPole-v1", {"hidden_sizes": [16], "n_steps": 16}, total_timesteps=500)
    assert result.config["args"]["hidden_sizes"] == [16]
    assert result.policy.net.sizes == [4, 16, 2]
    with pytest.raises(RLError, match="learning_rat"):
        get_agent("PPO").train("CartPole-v1", {"learning_rat": 1.0}, total_timesteps=500)
    with pytest.raises(RLError):
        get_agent("A2C").Args(num_envs=0)


@pytest.mark.parametrize("name", ["PPO", "A2C", "CEM"])
def test_box_actions(name):
    seen = []
    result = get_agent(name).train("Pendulum-v1", seed=1, total_timesteps=2_000, progress=seen.append)
    assert seen and result.timesteps >= 2_000
    policy = result.policy
    assert policy.head == "box" and policy.n_outputs == 1
    actions = policy.act(np.random.default_rng(0).standard_normal((32, 3)) * 10)
    assert actions.shape == (32, 1) and np.all(np.abs(actions) <= 2.0)
    if name != "CEM":
        assert policy.log_std is not None and policy.log_std.shape == (1,)


def test_episode_tracker_ignores_next_step_reset_transitions():
    tracker = common.EpisodeTracker(2)
    ones = np.ones(2, dtype=np.float32)
    f, t = np.array([False, False]), np.array([True, False])
    assert tracker.step(ones, f, f).all()
    assert tracker.step(ones, t, f).all()  # copy 0 terminates after 2 steps
    valid = tracker.step(np.array([0.0, 1.0]), f, np.array([False, True]))  # copy 0 resets
    assert valid.tolist() == [False, True]
    assert tracker.returns == [2.0, 3.0] and tracker.lengths == [2, 3]
    assert tracker.step(ones, f, f).tolist() == [True, False]
