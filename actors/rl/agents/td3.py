"""TD3 for Box actions: a deterministic tanh actor, twin critics, target policy smoothing and delayed
actor updates (Fujimoto et al., "Addressing Function Approximation Error in Actor-Critic Methods",
2018), in the form Stable-Baselines3 implements.

Each gradient step trains both critics against ``r + gamma * min target Q(s', a')`` with ``a'`` the
target actor's action plus clipped Gaussian noise; every ``policy_delay`` steps the actor climbs
``Q1(s, actor(s))`` and the targets (actor and critics) move by Polyak averaging. Exploration adds
Gaussian noise to the actor's action in the squashed ``[-1, 1]`` space. The loop, replay buffer,
checkpoints, critics and exported policy are shared with SAC (:mod:`actors.rl.agents.offpolicy`); the
gradients are hand-written and checked by finite differences in ``tests/actors/rl/test_gradcheck.py``.

Defaults are RL-Zoo's Pendulum-v1 settings (rl-baselines3-zoo, hyperparams/td3.yml: layers 400 and
300, gamma 0.98, buffer 200,000, 10,000 random steps, exploration noise 0.1, learning rate 1e-3) with
SB3's TD3 defaults for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.rl.agents import common
from actors.rl.agents.dqn import MAX_BUFFER_SIZE
from actors.rl.agents.offpolicy import DTYPE, OffPolicyArgs, TwinCritics, polyak, run_off_policy
from actors.rl.errors import RLError
from actors.rl.nn import MLP, Adam

NAME = "TD3"
DEFAULT_TIMESTEPS = 20_000


@dataclass
class Args(OffPolicyArgs):
    """TD3's hyperparameters (the shared ones: :class:`actors.rl.agents.offpolicy.OffPolicyArgs`,
    here with RL-Zoo's Pendulum defaults); the bounded ones are listed in docs/agents.md."""

    hidden_sizes: tuple[int, ...] = common.limited((400, 300), common.MAX_HIDDEN_WIDTH,
                                                   max_len=common.MAX_HIDDEN_LAYERS)
    """hidden layer widths of the actor and of each critic"""
    buffer_size: int = common.limited(200_000, MAX_BUFFER_SIZE)
    """replay buffer capacity in transitions"""
    learning_starts: int = 10_000
    """environment steps taken with uniformly random actions before the first gradient step"""
    gamma: float = 0.98
    """discount factor"""
    policy_delay: int = 2
    """critic updates per actor and target update"""
    exploration_noise: float = 0.1
    """std of the Gaussian noise added to the actor's action while collecting, in [-1, 1] units"""
    target_policy_noise: float = 0.2
    """std of the smoothing noise on the target actor's action"""
    target_noise_clip: float = 0.5
    """bound on that smoothing noise"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy_delay < 1:
            raise RLError("policy_delay must be >= 1")
        if min(self.exploration_noise, self.target_policy_noise, self.target_noise_clip) < 0:
            raise RLError("the noise scales must be >= 0")


def agent_supports(observation_space, action_space) -> str | None:
    return common.space_error(observation_space, action_space, discrete_actions=False, box_actions=True)


class TwinDelayed:
    """The actor and its target, the twin critics, and one gradient step. The losses are separate
    methods without side effects (gradient check)."""

    def __init__(self, obs_dim: int, act_dim: int, args: Args, rng: np.random.Generator, dtype=DTYPE) -> None:
        self.act_dim, self.dtype, self.args = act_dim, dtype, args
        self.actor = MLP([obs_dim, *args.hidden_sizes, act_dim], args.activation, rng, dtype=dtype)
        self.critics = TwinCritics(obs_dim, act_dim, args, rng, dtype)
        self.actor_flat, views = common.bind_flat(self.actor.params)
        common.bind_mlp(self.actor, views)
        self.actor_target = self.actor.copy()
        self.actor_target_flat, views = common.bind_flat(self.actor_target.params)
        common.bind_mlp(self.actor_target, views)
        self.actor_opt = Adam([self.actor_flat], lr=args.learning_rate)

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = np.tanh(self.actor.forward(obs))
        noise = rng.standard_normal(a.shape).astype(self.dtype) * self.args.exploration_noise
        return np.clip(a + noise, -1.0, 1.0)

    def critic_loss_and_grads(self, batch, smoothing: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """The critics' loss against ``r + gamma (1 - done) min target Q(s', a')``,
        ``a' = clip(tanh(target actor(s')) + clip(smoothing, -c, c), -1, 1)``; the gradient over
        both critics' parameters."""
        obs, actions, rewards, next_obs, terminated = batch
        c = self.args.target_noise_clip
        a2 = np.clip(np.tanh(self.actor_target.forward(next_obs)) + np.clip(smoothing, -c, c), -1.0, 1.0)
        target = rewards + self.args.gamma * (1.0 - terminated) * self.critics.target_min(next_obs, a2)
        return self.critics.loss_and_grads(obs, actions, target)

    def actor_loss_and_grads(self, obs: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """``-mean(Q1(s, tanh(actor(s))))`` (the critic held fixed) and its gradient over the actor."""
        out, cache = self.actor.forward_cache(obs)
        a = np.tanh(out)
        q, dq_da = self.critics.value_and_action_grad(obs, a, smaller=False)
        return -float(q.mean()), common.flat_grad(self.actor.backward(cache, -dq_da * (1.0 - a * a)))

    def update(self, batch, rng: np.random.Generator, step: int) -> dict:
        """Gradient step number ``step`` (from 1): the critics; every ``policy_delay`` steps the
        actor and then every target."""
        smoothing = rng.standard_normal(batch[1].shape).astype(self.dtype) * self.args.target_policy_noise
        critic_loss, grads = self.critic_loss_and_grads(batch, smoothing)
        self.critics.opt.step(grads)
        out = {"critic_loss": critic_loss}
        if step % self.args.policy_delay == 0:
            actor_loss, grads = self.actor_loss_and_grads(batch[0])
            self.actor_opt.step(grads)
            self.critics.update_targets(self.args.tau)
            polyak(self.actor_target_flat, self.actor_flat, self.args.tau)
            out["actor_loss"] = actor_loss
        return out

    def acting_net(self) -> MLP:
        """The actor (evaluation applies its tanh and rescales, as SB3's TD3 acts)."""
        return self.actor.copy()

    @property
    def optimizers(self) -> tuple[Adam, Adam]:
        return self.actor_opt, self.critics.opt

    @property
    def flats(self) -> list[np.ndarray]:
        """Every learnt array, as a checkpoint stores them."""
        return [self.actor_flat, self.critics.flat, self.actor_target_flat, self.critics.target_flat]


@common.single_threaded
def train(env_id: str, args: Args | dict | None = None, seed: int = 0, total_timesteps: int | None = None,
          progress: common.ProgressFn | None = None, checkpoint_path: str | None = None,
          checkpoint_every: int = 10_000, should_stop: common.StopFn | None = None,
          env_kwargs: dict | None = None, *, check: common.CheckFn | None = None,
          check_every: int = 5_000) -> common.TrainResult:
    """Train TD3 on ``env_id``; callbacks as in :func:`actors.rl.agents.dqn.train`."""
    args = common.resolve_args(Args, args)
    total = common.timestep_budget(total_timesteps, DEFAULT_TIMESTEPS)
    return run_off_policy(NAME, TwinDelayed, env_id, args, seed, total, progress, checkpoint_path,
                          checkpoint_every, should_stop, env_kwargs, check, check_every)
