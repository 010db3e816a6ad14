"""Tuned hyperparameters per (agent, environment), as data.

Every number here is RL-Baselines3-Zoo's (github.com/DLR-RM/rl-baselines3-zoo, ``hyperparams/<algo>.yml``
at commit 22e3ff2, April 2026), translated to this engine's names:

* ``n_envs`` → ``num_envs``; ``train_freq`` → ``train_frequency``; ``exploration_final_eps`` →
  ``end_e``; ``clip_range`` → ``clip_coef``; ``net_arch`` → ``hidden_sizes``;
* PPO's ``batch_size`` (a minibatch of transitions) → ``num_minibatches = n_envs * n_steps / batch_size``;
* ``lin_<x>`` (a rate decayed linearly to zero) → ``learning_rate: x`` with ``anneal_lr: true``;
* DQN's ``gradient_steps: -1`` (as many gradient steps as environment steps collected) →
  ``gradient_steps = train_freq * n_envs``;
* a field the zoo leaves out takes Stable-Baselines3's default, written out here wherever this
  engine's default differs (its defaults are tuned for CartPole), and SB3's DQN is not a double DQN
  (``double_q: false``).

Where the zoo uses something this engine does not have, the preset says so in ``differences``
instead of pretending to be the zoo's; pairs that depend on gSDE exploration (or, for TD3 on
MountainCarContinuous, Ornstein-Uhlenbeck noise) have no preset (:data:`WITHOUT_PRESET` says why),
because a preset without them is not the tuned setting. The zoo's ``normalize: true`` is
``normalize_obs`` and ``normalize_reward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SOURCE = "rl-baselines3-zoo hyperparams/{algo}.yml @ 22e3ff2"


@dataclass(frozen=True)
class Preset:
    agent: str
    env_id: str
    hyperparams: dict[str, Any]
    total_timesteps: int
    differences: tuple[str, ...] = field(default=())

    def describe(self) -> dict[str, Any]:
        return {"agent": self.agent, "env_name": self.env_id, "hyperparams": dict(self.hyperparams),
                "total_timesteps": self.total_timesteps, "source": SOURCE.format(algo=self.agent.lower()),
                "differences": list(self.differences)}


_SB3_PPO = {"learning_rate": 3e-4, "anneal_lr": False, "gamma": 0.99, "gae_lambda": 0.95, "n_epochs": 10,
            "clip_coef": 0.2, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5}
_SB3_A2C = {"learning_rate": 7e-4, "anneal_lr": False, "n_steps": 5, "gamma": 0.99, "gae_lambda": 1.0,
            "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5, "optimizer": "rmsprop",
            "normalize_advantage": False}
#: The zoo's ``normalize: true``: VecNormalize over observations and rewards with its default clips, at
#: the algorithm's discount (the zoo passes ``gamma`` on), as actors/rl/normalize.py does.
_VECNORMALIZE = {"normalize_obs": True, "normalize_reward": True}
_SB3_DQN = {"num_envs": 1, "double_q": False, "start_e": 1.0, "max_grad_norm": 10.0}
_DQN_ACROBOT_LUNAR = {**_SB3_DQN, "learning_rate": 6.3e-4, "batch_size": 128, "buffer_size": 50_000,
                      "learning_starts": 0, "gamma": 0.99, "target_update_interval": 250, "train_frequency": 4,
                      "gradient_steps": 4, "exploration_fraction": 0.12, "end_e": 0.1, "hidden_sizes": [256, 256]}
_TD3_ZOO = {"gamma": 0.98, "buffer_size": 200_000, "learning_starts": 10_000, "exploration_noise": 0.1,
            "gradient_steps": 1, "train_frequency": 1, "learning_rate": 1e-3, "hidden_sizes": [400, 300]}

_ALL = [
    Preset("PPO", "CartPole-v1", {**_SB3_PPO, "num_envs": 8, "n_steps": 32, "num_minibatches": 1, "gae_lambda": 0.8,
                                  "gamma": 0.98, "n_epochs": 20, "learning_rate": 1e-3, "anneal_lr": True},
           100_000, ("clip_coef stays 0.2 where the zoo decays it linearly (lin_0.2)",)),
    Preset("PPO", "LunarLander-v3", {**_SB3_PPO, "num_envs": 16, "n_steps": 1024, "num_minibatches": 256,
                                     "gae_lambda": 0.98, "gamma": 0.999, "n_epochs": 4, "ent_coef": 0.01},
           1_000_000),
    Preset("PPO", "LunarLanderContinuous-v3", {**_SB3_PPO, "num_envs": 16, "n_steps": 1024, "num_minibatches": 256,
                                               "gae_lambda": 0.98, "gamma": 0.999, "n_epochs": 4, "ent_coef": 0.01},
           1_000_000),
    Preset("PPO", "MountainCar-v0", {**_SB3_PPO, **_VECNORMALIZE, "num_envs": 16, "n_steps": 16, "num_minibatches": 4,
                                     "gae_lambda": 0.98, "gamma": 0.99, "n_epochs": 4}, 1_000_000),
    Preset("PPO", "Acrobot-v1", {**_SB3_PPO, **_VECNORMALIZE, "num_envs": 16, "n_steps": 256, "num_minibatches": 64,
                                 "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4}, 1_000_000),
    Preset("A2C", "CartPole-v1", {**_SB3_A2C, "num_envs": 8}, 500_000),
    Preset("A2C", "MountainCar-v0", {**_SB3_A2C, **_VECNORMALIZE, "num_envs": 16}, 1_000_000),
    Preset("A2C", "Acrobot-v1", {**_SB3_A2C, **_VECNORMALIZE, "num_envs": 16}, 500_000),
    Preset("A2C", "LunarLander-v3", {**_SB3_A2C, "num_envs": 8, "gamma": 0.995, "learning_rate": 8.3e-4,
                                     "anneal_lr": True, "ent_coef": 1e-5}, 200_000),
    Preset("DQN", "CartPole-v1", {**_SB3_DQN, "learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000,
                                  "learning_starts": 1_000, "gamma": 0.99, "target_update_interval": 10,
                                  "train_frequency": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
                                  "end_e": 0.04, "hidden_sizes": [256, 256]}, 50_000),
    Preset("DQN", "MountainCar-v0", {**_SB3_DQN, "learning_rate": 4e-3, "batch_size": 128, "buffer_size": 10_000,
                                     "learning_starts": 1_000, "gamma": 0.98, "target_update_interval": 600,
                                     "train_frequency": 16, "gradient_steps": 8, "exploration_fraction": 0.2,
                                     "end_e": 0.07, "hidden_sizes": [256, 256]}, 120_000),
    Preset("DQN", "Acrobot-v1", _DQN_ACROBOT_LUNAR, 100_000),
    Preset("DQN", "LunarLander-v3", _DQN_ACROBOT_LUNAR, 100_000),
    Preset("SAC", "Pendulum-v1", {"learning_rate": 1e-3}, 20_000),
    Preset("SAC", "LunarLanderContinuous-v3", {"batch_size": 256, "learning_rate": 7.3e-4, "buffer_size": 1_000_000,
                                               "gamma": 0.99, "tau": 0.01, "train_frequency": 1, "gradient_steps": 1,
                                               "learning_starts": 10_000, "hidden_sizes": [400, 300]},
           500_000, ("the learning rate stays 7.3e-4 where the zoo decays it linearly (lin_7.3e-4)",)),
    Preset("TD3", "Pendulum-v1", dict(_TD3_ZOO), 20_000),
    Preset("TD3", "LunarLanderContinuous-v3", dict(_TD3_ZOO), 300_000),
]

PRESETS: dict[tuple[str, str], Preset] = {(p.agent, p.env_id): p for p in _ALL}

#: Zoo entries left out, and why: a preset without these features would not be the tuned setting.
WITHOUT_PRESET: dict[tuple[str, str], str] = {
    ("PPO", "MountainCarContinuous-v0"): "the zoo explores with gSDE",
    ("PPO", "Pendulum-v1"): "the zoo explores with gSDE",
    ("A2C", "Pendulum-v1"): "the zoo explores with gSDE",
    ("A2C", "LunarLanderContinuous-v3"): "the zoo explores with gSDE",
    ("A2C", "MountainCarContinuous-v0"): "the zoo explores with gSDE",
    ("SAC", "MountainCarContinuous-v0"): "the zoo explores with gSDE",
    ("TD3", "MountainCarContinuous-v0"): "the zoo explores with Ornstein-Uhlenbeck noise",
}


def preset_for(agent: str, env_id: str) -> Preset | None:
    return PRESETS.get((agent.upper(), env_id))


def presets_of(agent: str) -> list[Preset]:
    return [p for p in _ALL if p.agent == agent.upper()]
