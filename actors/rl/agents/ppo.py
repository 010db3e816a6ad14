"""Proximal Policy Optimization (clipped surrogate, GAE, minibatch epochs) in numpy.

Defaults start from RL-Zoo's CartPole-v1 settings (8 envs x 32 steps, gamma 0.98, lambda 0.8,
linearly annealed learning rate) with half the epochs and three times the step size, which on
seeds 0-9 reached a greedy 500 after a median of ~9k steps and ended at 500 on all ten. Box
actions use a diagonal Gaussian with a state-independent ``log_std``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.rl import normalize
from actors.rl.agents import common
from actors.rl.agents.actor_critic import MAX_N_STEPS, MAX_ROLLOUT, ActorCritic, Batch, run_on_policy, supports
from actors.rl.errors import OutOfRange, RLError
from actors.rl.nn import ACTIVATIONS, Adam

NAME = "PPO"
DEFAULT_TIMESTEPS = 50_000


#: Passes over one batch: ten times SB3's default of 10, five times the most RL-Zoo uses (20).
MAX_EPOCHS = 100
#: Minibatches per pass: four times RL-Zoo's largest split (a 65,536-step rollout in 64-row minibatches).
MAX_MINIBATCHES = 4096


@dataclass
class Args(normalize.Args):
    """PPO's hyperparameters. Those that cost time or memory carry their bounds (``common.limited``);
    docs/agents.md lists them with the reasoning."""

    num_envs: int = common.limited(8, common.MAX_NUM_ENVS)
    """environment copies stepped together (one native vector env where available)"""
    n_steps: int = common.limited(32, MAX_N_STEPS)
    """steps per copy per rollout; the batch is num_envs * n_steps transitions"""
    hidden_sizes: tuple[int, ...] = common.limited((64, 64), common.MAX_HIDDEN_WIDTH,
                                                   max_len=common.MAX_HIDDEN_LAYERS)
    """hidden layer widths of both the actor and the critic"""
    activation: str = "tanh"
    """hidden activation: tanh or relu"""
    learning_rate: float = 3e-3
    """Adam step size at the start of training"""
    anneal_lr: bool = True
    """decay the step size linearly to zero at total_timesteps; keeps the final policy stable"""
    gamma: float = 0.98
    """discount factor"""
    gae_lambda: float = 0.8
    """GAE(lambda) trade-off between bias (0) and variance (1)"""
    n_epochs: int = common.limited(10, MAX_EPOCHS)
    """passes over each batch"""
    num_minibatches: int = common.limited(1, MAX_MINIBATCHES)
    """minibatches per pass"""
    clip_coef: float = 0.2
    """surrogate clipping range epsilon"""
    normalize_advantage: bool = True
    """standardise advantages within each minibatch"""
    ent_coef: float = 0.0
    """entropy bonus weight; CartPole explores enough without one"""
    vf_coef: float = 0.5
    """value-loss weight"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    target_kl: float | None = None
    """stop a batch's epochs early once the approximate KL exceeds this (None: never)"""
    log_std_init: float = 0.0
    """initial log standard deviation of the Gaussian (Box actions only)"""

    def __post_init__(self) -> None:
        validate_common(self)
        if self.clip_coef <= 0:
            raise RLError("clip_coef must be > 0")


def validate_common(args) -> None:
    """The checks PPO and A2C share: limits first, then the rollout size they imply together."""
    common.check_limits(args)
    normalize.check(args)
    if args.num_envs * args.n_steps > MAX_ROLLOUT:
        raise OutOfRange("n_steps", MAX_ROLLOUT // args.num_envs, args.n_steps, message=(
            f"num_envs * n_steps = {args.num_envs * args.n_steps} transitions per rollout exceeds the limit of "
            f"{MAX_ROLLOUT}: with num_envs={args.num_envs}, n_steps may be at most {MAX_ROLLOUT // args.num_envs}"))
    if args.learning_rate <= 0:
        raise RLError("learning_rate must be > 0")
    if args.activation not in ACTIVATIONS:
        raise RLError(f"activation must be one of {ACTIVATIONS}")
    if not 0.0 <= args.gamma <= 1.0 or not 0.0 <= args.gae_lambda <= 1.0:
        raise RLError("gamma and gae_lambda must lie in [0, 1]")


def _update(model: ActorCritic, opt: Adam, batch: Batch, rng: np.random.Generator, args: Args,
            interrupted: common.StopFn) -> dict:
    """``n_epochs`` passes of ``num_minibatches`` steps each; ``interrupted`` is asked before every
    step, so a stop does not wait for the remaining passes (up to 100 x 4096 steps)."""
    n = batch.obs.shape[0]
    if n == 0:
        return {}
    stats: dict = {}
    for _ in range(args.n_epochs):
        order = rng.permutation(n) if args.num_minibatches > 1 else np.arange(n)
        for mb in np.array_split(order, min(args.num_minibatches, n)):
            if interrupted():
                return stats
            adv = batch.advantages[mb]
            if args.normalize_advantage and mb.size > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            _, grads, stats = model.loss_and_grads(
                batch.obs[mb], batch.actions[mb], batch.logp[mb], adv, batch.returns[mb],
                clip=args.clip_coef, ent_coef=args.ent_coef, vf_coef=args.vf_coef)
            opt.step(grads)
        if args.target_kl is not None and stats.get("approx_kl", 0.0) > args.target_kl:
            break
    return stats


def agent_supports(observation_space, action_space) -> str | None:
    return supports(observation_space, action_space)


@common.single_threaded
def train(env_id: str, args: Args | dict | None = None, seed: int = 0, total_timesteps: int | None = None,
          progress: common.ProgressFn | None = None, checkpoint_path: str | None = None,
          checkpoint_every: int = 10_000, should_stop: common.StopFn | None = None,
          env_kwargs: dict | None = None, *, check: common.CheckFn | None = None,
          check_every: int = 5_000) -> common.TrainResult:
    """Train PPO on ``env_id``; see :mod:`actors.rl.agents` for the shared contract.

    ``check(timesteps, policy)`` is an optional out-of-band hook (benchmarks, learning tests):
    called after an update once ``check_every`` steps have passed since its last call, its time is
    left out of ``wall_time_s``, and returning True ends training with ``check_passed=True``.
    """
    args = common.resolve_args(Args, args)
    total = common.timestep_budget(total_timesteps, DEFAULT_TIMESTEPS)
    hooks = common.Hooks(total, progress, should_stop, check, check_every, checkpoint_path, checkpoint_every)
    return run_on_policy(NAME, _update, env_id, args, seed, total, hooks, env_kwargs)
