"""The tuned presets are usable as they stand: every one is accepted by its agent within the limits,
names a real environment and budget, and the command line trains with it."""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest

from actors.rl.agents import get_agent
from actors.rl.agents.common import MAX_TOTAL_TIMESTEPS
from actors.rl.agents.presets import PRESETS, WITHOUT_PRESET
from tests.actors.rl.test_rl_cli import run


@pytest.mark.parametrize("key", sorted(PRESETS), ids=[f"{a}-{e}" for a, e in sorted(PRESETS)])
def test_every_preset_is_accepted_by_its_agent(key):
    preset = PRESETS[key]
    agent = get_agent(preset.agent)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in preset.hyperparams.items()}
    args = agent.Args(**values)  # unknown names, bad types and values beyond the limits raise
    assert all(getattr(args, k) == v for k, v in values.items())
    assert 0 < preset.total_timesteps <= MAX_TOTAL_TIMESTEPS
    gym.spec(preset.env_id)  # a real, current id
    assert preset.describe()["source"].startswith("rl-baselines3-zoo hyperparams/")
    assert key not in WITHOUT_PRESET


def test_the_ppo_minibatch_translation_keeps_the_zoos_minibatch_size():
    for (agent, env), preset in PRESETS.items():
        if agent == "PPO":
            hp = {f.name: f.default for f in dataclasses.fields(get_agent("PPO").Args)} | preset.hyperparams
            assert hp["num_envs"] * hp["n_steps"] % hp["num_minibatches"] == 0, env


def test_the_cli_trains_with_a_preset_and_refuses_a_missing_one(tmp_path, capsys):
    out = tmp_path / "dqn.npz"
    code = run(["train", "--env", "CartPole-v1", "--agent", "dqn", "--preset", "--timesteps", "1200",
                "--hp", "learning_starts=200", "--out", str(out), "--eval-episodes", "2", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    with np.load(out, allow_pickle=False) as z:
        training = json.loads(str(z["__manifest__"][()]))["training"]
    args = training.get("args", training)
    assert args["hidden_sizes"] == [256, 256] and args["double_q"] is False and args["learning_starts"] == 200
    assert run(["train", "--env", "Taxi-v4", "--agent", "dqn", "--preset"]) == 1
    assert "no tuned preset" in capsys.readouterr().err
