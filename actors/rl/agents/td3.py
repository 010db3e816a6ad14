"""TD3 for Box actions: a deterministic tanh actor, twin critics, target policy smoothing and delayed
actor updates (Fujimoto et al., "Addressing Function Approximation Error in Actor-Critic Methods",
2018), in the form Stable-Baselines3 implements.

Each gradient step trains both critics against ``r + gamma * min target Q(s', a')`` with ``a'`` the
target actor's action plus clipped Gaussian noise; every ``policy_delay`` steps the actor climbs
``Q1(s, actor(s))`` and the targets (actor and critics) move by Polyak averaging. Exploration adds
Gaussian noise to the actor's action in the squashed ``[-1, 1]`` space. The loop, replay buffer,
checkpoints and exported policy are SAC's (:func:`actors.rl.agents.sac.run_off_policy`); the
gradients are hand-written and checked by finite differences in ``tests/actors/rl/test_gradcheck.py``.

Defaults are RL-Zoo's Pendulum-v1 settings (rl-baselines3-zoo, hyperparams/td3.yml: layers 400 and
300, gamma 0.98, buffer 200,000, 10,000 random steps, exploration noise 0.1, learning rate 1e-3) with
SB3's TD3 defaults for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.rl.agents import common
from actors.rl.agents.dqn import MAX_BATCH_SIZE, MAX_BUFFER_SIZE, MAX_GRADIENT_STEPS
from actors.rl.agents.sac import polyak, run_off_policy
from actors.rl.errors import RLError
from actors.rl.nn import ACTIVATIONS, MLP, Adam

NAME = "TD3"
DEFAULT_TIMESTEPS = 20_000
DTYPE = np.float32


@dataclass
class Args:
    """TD3's hyperparameters; the bounded ones (``common.limited``) are listed in docs/agents.md."""

    num_envs: int = common.limited(1, common.MAX_NUM_ENVS)
    """environment copies stepped together (each step of each copy is one timestep)"""
    hidden_sizes: tuple[int, ...] = common.limited((400, 300), common.MAX_HIDDEN_WIDTH,
                                                   max_len=common.MAX_HIDDEN_LAYERS)
    """hidden layer widths of the actor and of each critic"""
    activation: str = "relu"
    """hidden activation: relu or tanh"""
    learning_rate: float = 1e-3
    """Adam step size of the actor and the critics"""
    buffer_size: int = common.limited(200_000, MAX_BUFFER_SIZE)
    """replay buffer capacity in transitions"""
    learning_starts: int = 10_000
    """environment steps taken with uniformly random actions before the first gradient step"""
    batch_size: int = common.limited(256, MAX_BATCH_SIZE)
    """transitions per gradient step"""
    gamma: float = 0.98
    """discount factor"""
    tau: float = 0.005
    """Polyak coefficient of the target networks (1: copy)"""
    train_frequency: int = 1
    """environment steps (per copy) between training blocks"""
    gradient_steps: int = common.limited(1, MAX_GRADIENT_STEPS, minimum=0)
    """gradient steps per training block"""
    policy_delay: int = 2
    """critic updates per actor and target update"""
    exploration_noise: float = 0.1
    """std of the Gaussian noise added to the actor's action while collecting, in [-1, 1] units"""
    target_policy_noise: float = 0.2
    """std of the smoothing noise on the target actor's action"""
    target_noise_clip: float = 0.5
    """bound on that smoothing noise"""

    def __post_init__(self) -> None:
        common.check_limits(self)
        if self.buffer_size < self.batch_size:
            raise RLError("buffer_size must be >= batch_size")
        if self.train_frequency < 1 or self.policy_delay < 1 or self.learning_starts < 0:
            raise RLError("train_frequency and policy_delay must be >= 1, learning_starts >= 0")
        if self.learning_rate <= 0 or not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise RLError("learning_rate must be > 0, gamma in [0, 1] and tau in (0, 1]")
        if min(self.exploration_noise, self.target_policy_noise, self.target_noise_clip) < 0:
            raise RLError("the noise scales must be >= 0")
        if self.activation not in ACTIVATIONS:
            raise RLError(f"activation must be one of {ACTIVATIONS}")


def agent_supports(observation_space, action_space) -> str | None:
    return common.space_error(observation_space, action_space, discrete_actions=False, box_actions=True)


class TwinDelayed:
    """The actor, the twin critics and the targets of both (each group in one flat vector), and
    one gradient step. The losses are separate methods without side effects (gradient check)."""

    def __init__(self, obs_dim: int, act_dim: int, args: Args, rng: np.random.Generator, dtype=DTYPE) -> None:
        sizes = list(args.hidden_sizes)
        self.act_dim, self.dtype, self.args = act_dim, dtype, args
        self.actor = MLP([obs_dim, *sizes, act_dim], args.activation, rng, dtype=dtype)
        self.q1 = MLP([obs_dim + act_dim, *sizes, 1], args.activation, rng, dtype=dtype)
        self.q2 = MLP([obs_dim + act_dim, *sizes, 1], args.activation, rng, dtype=dtype)
        self.actor_flat, views = common.bind_flat(self.actor.params)
        common.bind_mlp(self.actor, views)
        self.q_flat, views = common.bind_flat(self.q1.params + self.q2.params)
        common.bind_mlp(self.q2, common.bind_mlp(self.q1, views))
        self.actor_target = self.actor.copy()
        self.actor_target_flat, views = common.bind_flat(self.actor_target.params)
        common.bind_mlp(self.actor_target, views)
        self.q1_target, self.q2_target = self.q1.copy(), self.q2.copy()
        self.q_target_flat, views = common.bind_flat(self.q1_target.params + self.q2_target.params)
        common.bind_mlp(self.q2_target, common.bind_mlp(self.q1_target, views))
        self.actor_opt = Adam([self.actor_flat], lr=args.learning_rate)
        self.q_opt = Adam([self.q_flat], lr=args.learning_rate)

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = np.tanh(self.actor.forward(obs))
        noise = rng.standard_normal(a.shape).astype(self.dtype) * self.args.exploration_noise
        return np.clip(a + noise, -1.0, 1.0)

    def critic_loss_and_grads(self, batch, smoothing: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """``0.5 * (MSE(Q1) + MSE(Q2))`` against ``r + gamma (1 - done) min target Q(s', a')``,
        ``a' = clip(tanh(target actor(s')) + clip(smoothing, -c, c), -1, 1)``; the gradient over
        both critics' parameters."""
        obs, actions, rewards, next_obs, terminated = batch
        n = obs.shape[0]
        c = self.args.target_noise_clip
        a2 = np.clip(np.tanh(self.actor_target.forward(next_obs)) + np.clip(smoothing, -c, c), -1.0, 1.0)
        next_in = np.concatenate([next_obs, a2], axis=1)
        q_next = np.minimum(self.q1_target.forward(next_in), self.q2_target.forward(next_in))[:, 0]
        target = rewards + self.args.gamma * (1.0 - terminated) * q_next
        taken = np.concatenate([obs, actions], axis=1)
        q1, c1 = self.q1.forward_cache(taken)
        q2, c2 = self.q2.forward_cache(taken)
        d1, d2 = q1[:, 0] - target, q2[:, 0] - target
        loss = 0.5 * float(np.mean(d1 * d1) + np.mean(d2 * d2))
        return loss, common.flat_grad(self.q1.backward(c1, (d1 / n)[:, None]) + self.q2.backward(c2, (d2 / n)[:, None]))

    def actor_loss_and_grads(self, obs: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """``-mean(Q1(s, tanh(actor(s))))`` (the critic held fixed) and its gradient over the actor."""
        n = obs.shape[0]
        out, cache = self.actor.forward_cache(obs)
        a = np.tanh(out)
        q, qc = self.q1.forward_cache(np.concatenate([obs, a], axis=1))
        g_a = -self.q1.input_grad(qc, np.full((n, 1), 1.0 / n, dtype=self.dtype))[:, obs.shape[1]:]
        return -float(q.mean()), common.flat_grad(self.actor.backward(cache, g_a * (1.0 - a * a)))

    def update(self, batch, rng: np.random.Generator, step: int) -> dict:
        """Gradient step number ``step`` (from 1): the critics; every ``policy_delay`` steps the
        actor and then every target."""
        smoothing = rng.standard_normal(batch[1].shape).astype(self.dtype) * self.args.target_policy_noise
        critic_loss, grads = self.critic_loss_and_grads(batch, smoothing)
        self.q_opt.step(grads)
        out = {"critic_loss": critic_loss}
        if step % self.args.policy_delay == 0:
            actor_loss, grads = self.actor_loss_and_grads(batch[0])
            self.actor_opt.step(grads)
            polyak(self.q_target_flat, self.q_flat, self.args.tau)
            polyak(self.actor_target_flat, self.actor_flat, self.args.tau)
            out["actor_loss"] = actor_loss
        return out

    def acting_net(self) -> MLP:
        """The actor (evaluation applies its tanh and rescales, as SB3's TD3 acts)."""
        return self.actor.copy()

    @property
    def optimizers(self) -> tuple[Adam, Adam]:
        return self.actor_opt, self.q_opt

    @property
    def flats(self) -> list[np.ndarray]:
        """Every learnt array, as a checkpoint stores them."""
        return [self.actor_flat, self.q_flat, self.actor_target_flat, self.q_target_flat]


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
