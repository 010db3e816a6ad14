"""Soft Actor-Critic for Box actions: a tanh-squashed Gaussian actor, twin critics with
Polyak-averaged targets, and the entropy coefficient tuned toward a target entropy.

The updates follow the form Stable-Baselines3 implements (Haarnoja et al., "Soft Actor-Critic
Algorithms and Applications", 2018), in the same order within a gradient step: the entropy
coefficient from the current actor's sample, then the critics against ``r + gamma * (min target Q -
alpha * log pi)``, then the actor against the updated critics with the same sample, then the targets.
Actions are stored and fed to the critics in the squashed ``[-1, 1]`` space and rescaled to the
environment's bounds only when stepping, as SB3 does. Every gradient is hand-written (the actor's
through :func:`actors.rl.agents.losses.squashed_gaussian`, the critics' input gradient through
:meth:`actors.rl.nn.MLP.input_grad`) and checked by finite differences in
``tests/actors/rl/test_gradcheck.py``. Evaluation acts with ``tanh(mean)`` rescaled, SB3's
deterministic action. The critics and the loop are shared with TD3 (:mod:`actors.rl.agents.offpolicy`).

Defaults are SB3's SAC defaults with RL-Zoo's Pendulum-v1 learning rate (1e-3; rl-baselines3-zoo,
hyperparams/sac.yml), the environment they are meant for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.rl.agents import common
from actors.rl.agents.losses import squashed_gaussian, squashed_gaussian_backward
from actors.rl.agents.offpolicy import DTYPE, OffPolicyArgs, TwinCritics, run_off_policy
from actors.rl.errors import RLError
from actors.rl.nn import MLP, Adam

NAME = "SAC"
DEFAULT_TIMESTEPS = 20_000


@dataclass
class Args(OffPolicyArgs):
    """SAC's hyperparameters (the shared ones: :class:`actors.rl.agents.offpolicy.OffPolicyArgs`);
    the bounded ones (``common.limited``) are listed in docs/agents.md."""

    target_update_interval: int = 1
    """gradient steps between target-critic updates"""
    ent_coef: float | None = None
    """fixed entropy coefficient; null tunes it automatically toward target_entropy"""
    init_ent_coef: float = 1.0
    """starting entropy coefficient when it is tuned"""
    target_entropy: float | None = None
    """entropy the tuned coefficient aims for; null means minus the action dimension"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_update_interval < 1:
            raise RLError("target_update_interval must be >= 1")
        for name in ("ent_coef", "target_entropy"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RLError(f"{name} must be a number or null")
        if (self.ent_coef is not None and self.ent_coef < 0) or self.init_ent_coef <= 0:
            raise RLError("ent_coef must be >= 0 and init_ent_coef > 0")


def agent_supports(observation_space, action_space) -> str | None:
    return common.space_error(observation_space, action_space, discrete_actions=False, box_actions=True)


class SoftActorCritic:
    """The actor, the twin critics, the entropy coefficient, and one gradient step. The losses are
    separate methods without side effects, so the gradient check can differentiate them."""

    def __init__(self, obs_dim: int, act_dim: int, args: Args, rng: np.random.Generator, dtype=DTYPE) -> None:
        self.act_dim, self.dtype = act_dim, dtype
        self.actor = MLP([obs_dim, *args.hidden_sizes, 2 * act_dim], args.activation, rng, dtype=dtype)
        self.critics = TwinCritics(obs_dim, act_dim, args, rng, dtype)
        self.actor_flat, views = common.bind_flat(self.actor.params)
        common.bind_mlp(self.actor, views)
        self.actor_opt = Adam([self.actor_flat], lr=args.learning_rate)
        self.tuned = args.ent_coef is None
        self.log_alpha = np.array([np.log(args.init_ent_coef if self.tuned else max(args.ent_coef, 1e-30))])
        self.alpha_opt = Adam([self.log_alpha], lr=args.learning_rate)
        self.fixed_alpha = None if self.tuned else float(args.ent_coef)
        self.target_entropy = float(-act_dim if args.target_entropy is None else args.target_entropy)
        self.gamma, self.tau, self.target_every = args.gamma, args.tau, args.target_update_interval

    @property
    def alpha(self) -> float:
        return self.fixed_alpha if self.fixed_alpha is not None else float(np.exp(self.log_alpha[0]))

    def _pi(self, obs: np.ndarray, noise: np.ndarray):
        out = self.actor.forward(obs)
        return squashed_gaussian(out[:, :self.act_dim], out[:, self.act_dim:], noise)

    def noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((n, self.act_dim)).astype(self.dtype)

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._pi(obs, self.noise(obs.shape[0], rng))[0]

    def critic_loss_and_grads(self, batch, next_noise: np.ndarray, alpha: float) -> tuple[float, list[np.ndarray]]:
        """The critics' loss against ``r + gamma (1 - done) (min target Q - alpha log pi)`` at a
        next action sampled with ``next_noise``; the gradient over both critics' parameters."""
        obs, actions, rewards, next_obs, terminated = batch
        a2, logp2, _ = self._pi(next_obs, next_noise)
        target = rewards + self.gamma * (1.0 - terminated) * (self.critics.target_min(next_obs, a2) - alpha * logp2)
        return self.critics.loss_and_grads(obs, actions, target)

    def actor_loss_and_grads(self, obs: np.ndarray, noise: np.ndarray, alpha: float
                             ) -> tuple[float, list[np.ndarray], np.ndarray]:
        """``mean(alpha log pi(a|s) - min(Q1, Q2)(s, a))`` at the reparameterised ``a`` (critics held
        fixed), its gradient over the actor's parameters, and ``log pi`` per row."""
        n, k = obs.shape[0], self.act_dim
        out, cache = self.actor.forward_cache(obs)
        a, logp, squash = squashed_gaussian(out[:, :k], out[:, k:], noise)
        q, dq_da = self.critics.value_and_action_grad(obs, a, smaller=True)
        g_mean, g_log_std = squashed_gaussian_backward(squash, -dq_da, np.full(n, alpha / n, dtype=self.dtype))
        loss = float(np.mean(alpha * logp - q))
        return loss, common.flat_grad(self.actor.backward(cache, np.concatenate([g_mean, g_log_std], axis=1))), logp

    def update(self, batch, rng: np.random.Generator, step: int) -> dict:
        """Gradient step number ``step`` (from 1) in SB3's order: entropy coefficient, critics,
        actor (same sample), then the target critics every ``target_update_interval`` steps."""
        obs = batch[0]
        noise = self.noise(obs.shape[0], rng)
        if self.tuned:  # d/d log_alpha of -mean(log_alpha * (log pi + target_entropy)), log pi held fixed
            logp = self._pi(obs, noise)[1]
            self.alpha_opt.step([np.array([-float(np.mean(logp + self.target_entropy))])])
        alpha = self.alpha
        critic_loss, grads = self.critic_loss_and_grads(batch, self.noise(obs.shape[0], rng), alpha)
        self.critics.opt.step(grads)
        actor_loss, grads, _ = self.actor_loss_and_grads(obs, noise, alpha)
        self.actor_opt.step(grads)
        if step % self.target_every == 0:
            self.critics.update_targets(self.tau)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "ent_coef": alpha}

    def acting_net(self) -> MLP:
        """The actor's mean head alone (the first ``act_dim`` outputs): what evaluation runs."""
        net = self.actor.copy()
        net.weights[-1] = net.weights[-1][:, :self.act_dim].copy()
        net.biases[-1] = net.biases[-1][:self.act_dim].copy()
        net.sizes[-1] = self.act_dim
        return net

    @property
    def optimizers(self) -> tuple[Adam, Adam, Adam]:
        return self.actor_opt, self.critics.opt, self.alpha_opt

    @property
    def flats(self) -> list[np.ndarray]:
        """Every learnt array, as a checkpoint stores them."""
        return [self.actor_flat, self.critics.flat, self.critics.target_flat, self.log_alpha]


@common.single_threaded
def train(env_id: str, args: Args | dict | None = None, seed: int = 0, total_timesteps: int | None = None,
          progress: common.ProgressFn | None = None, checkpoint_path: str | None = None,
          checkpoint_every: int = 10_000, should_stop: common.StopFn | None = None,
          env_kwargs: dict | None = None, *, check: common.CheckFn | None = None,
          check_every: int = 5_000) -> common.TrainResult:
    """Train SAC on ``env_id``; callbacks as in :func:`actors.rl.agents.dqn.train`."""
    args = common.resolve_args(Args, args)
    total = common.timestep_budget(total_timesteps, DEFAULT_TIMESTEPS)
    return run_off_policy(NAME, SoftActorCritic, env_id, args, seed, total, progress, checkpoint_path,
                          checkpoint_every, should_stop, env_kwargs, check, check_every)
