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
deterministic action.

Defaults are SB3's SAC defaults with RL-Zoo's Pendulum-v1 learning rate (1e-3; rl-baselines3-zoo,
hyperparams/sac.yml), the environment they are meant for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.rl.agents import common
from actors.rl.agents.dqn import MAX_BATCH_SIZE, MAX_BUFFER_SIZE, MAX_GRADIENT_STEPS, ReplayBuffer
from actors.rl.agents.losses import squashed_gaussian, squashed_gaussian_backward
from actors.rl.errors import RLError
from actors.rl.nn import ACTIVATIONS, MLP, Adam
from actors.rl.policy import MLPPolicy

NAME = "SAC"
DEFAULT_TIMESTEPS = 20_000
DTYPE = np.float32


@dataclass
class Args:
    """SAC's hyperparameters; the bounded ones (``common.limited``) are listed in docs/agents.md."""

    num_envs: int = common.limited(1, common.MAX_NUM_ENVS)
    """environment copies stepped together (each step of each copy is one timestep)"""
    hidden_sizes: tuple[int, ...] = common.limited((256, 256), common.MAX_HIDDEN_WIDTH,
                                                   max_len=common.MAX_HIDDEN_LAYERS)
    """hidden layer widths of the actor and of each critic"""
    activation: str = "relu"
    """hidden activation: relu or tanh"""
    learning_rate: float = 1e-3
    """Adam step size of the actor, the critics and the entropy coefficient"""
    buffer_size: int = common.limited(1_000_000, MAX_BUFFER_SIZE)
    """replay buffer capacity in transitions"""
    learning_starts: int = 100
    """environment steps taken with uniformly random actions before the first gradient step"""
    batch_size: int = common.limited(256, MAX_BATCH_SIZE)
    """transitions per gradient step"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak coefficient of the target critics (1: copy)"""
    train_frequency: int = 1
    """environment steps (per copy) between training blocks"""
    gradient_steps: int = common.limited(1, MAX_GRADIENT_STEPS, minimum=0)
    """gradient steps per training block"""
    target_update_interval: int = 1
    """gradient steps between target-critic updates"""
    ent_coef: float | None = None
    """fixed entropy coefficient; null tunes it automatically toward target_entropy"""
    init_ent_coef: float = 1.0
    """starting entropy coefficient when it is tuned"""
    target_entropy: float | None = None
    """entropy the tuned coefficient aims for; null means minus the action dimension"""

    def __post_init__(self) -> None:
        common.check_limits(self)
        if self.buffer_size < self.batch_size:
            raise RLError("buffer_size must be >= batch_size")
        if self.train_frequency < 1 or self.target_update_interval < 1 or self.learning_starts < 0:
            raise RLError("train_frequency and target_update_interval must be >= 1, learning_starts >= 0")
        if self.learning_rate <= 0 or not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise RLError("learning_rate must be > 0, gamma in [0, 1] and tau in (0, 1]")
        if self.activation not in ACTIVATIONS:
            raise RLError(f"activation must be one of {ACTIVATIONS}")
        for name in ("ent_coef", "target_entropy"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RLError(f"{name} must be a number or null")
        if (self.ent_coef is not None and self.ent_coef < 0) or self.init_ent_coef <= 0:
            raise RLError("ent_coef must be >= 0 and init_ent_coef > 0")


def agent_supports(observation_space, action_space) -> str | None:
    return common.space_error(observation_space, action_space, discrete_actions=False, box_actions=True)


class SoftActorCritic:
    """The actor, the twin critics and their targets (each group in one flat vector for Adam), the
    entropy coefficient, and one gradient step. The losses are separate methods without side
    effects, so the gradient check can differentiate them."""

    def __init__(self, obs_dim: int, act_dim: int, args: Args, rng: np.random.Generator, dtype=DTYPE) -> None:
        sizes = list(args.hidden_sizes)
        self.act_dim, self.dtype = act_dim, dtype
        self.actor = MLP([obs_dim, *sizes, 2 * act_dim], args.activation, rng, dtype=dtype)
        self.q1 = MLP([obs_dim + act_dim, *sizes, 1], args.activation, rng, dtype=dtype)
        self.q2 = MLP([obs_dim + act_dim, *sizes, 1], args.activation, rng, dtype=dtype)
        self.actor_flat, views = common.bind_flat(self.actor.params)
        common.bind_mlp(self.actor, views)
        self.q_flat, views = common.bind_flat(self.q1.params + self.q2.params)
        common.bind_mlp(self.q2, common.bind_mlp(self.q1, views))
        self.q1_target, self.q2_target = self.q1.copy(), self.q2.copy()
        self.q_target_flat, views = common.bind_flat(self.q1_target.params + self.q2_target.params)
        common.bind_mlp(self.q2_target, common.bind_mlp(self.q1_target, views))
        self.actor_opt = Adam([self.actor_flat], lr=args.learning_rate)
        self.q_opt = Adam([self.q_flat], lr=args.learning_rate)
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
        """``0.5 * (MSE(Q1) + MSE(Q2))`` against ``r + gamma (1 - done) (min target Q - alpha log pi)``
        at a next action sampled with ``next_noise``; the gradient over both critics' parameters."""
        obs, actions, rewards, next_obs, terminated = batch
        n = obs.shape[0]
        a2, logp2, _ = self._pi(next_obs, next_noise)
        next_in = np.concatenate([next_obs, a2], axis=1)
        q_next = np.minimum(self.q1_target.forward(next_in), self.q2_target.forward(next_in))[:, 0]
        target = rewards + self.gamma * (1.0 - terminated) * (q_next - alpha * logp2)
        taken = np.concatenate([obs, actions], axis=1)
        q1, c1 = self.q1.forward_cache(taken)
        q2, c2 = self.q2.forward_cache(taken)
        d1, d2 = q1[:, 0] - target, q2[:, 0] - target
        loss = 0.5 * float(np.mean(d1 * d1) + np.mean(d2 * d2))
        return loss, common.flat_grad(self.q1.backward(c1, (d1 / n)[:, None]) + self.q2.backward(c2, (d2 / n)[:, None]))

    def actor_loss_and_grads(self, obs: np.ndarray, noise: np.ndarray, alpha: float
                             ) -> tuple[float, list[np.ndarray], np.ndarray]:
        """``mean(alpha log pi(a|s) - min(Q1, Q2)(s, a))`` at the reparameterised ``a`` (critics held
        fixed), its gradient over the actor's parameters, and ``log pi`` per row."""
        n, k = obs.shape[0], self.act_dim
        out, cache = self.actor.forward_cache(obs)
        a, logp, squash = squashed_gaussian(out[:, :k], out[:, k:], noise)
        acting = np.concatenate([obs, a], axis=1)
        p1, c1 = self.q1.forward_cache(acting)
        p2, c2 = self.q2.forward_cache(acting)
        first = (p1 <= p2).astype(self.dtype)
        g_a = -(self.q1.input_grad(c1, first / n) + self.q2.input_grad(c2, (1.0 - first) / n))[:, obs.shape[1]:]
        g_mean, g_log_std = squashed_gaussian_backward(squash, g_a, np.full(n, alpha / n, dtype=self.dtype))
        loss = float(np.mean(alpha * logp - np.minimum(p1, p2)[:, 0]))
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
        self.q_opt.step(grads)
        actor_loss, grads, _ = self.actor_loss_and_grads(obs, noise, alpha)
        self.actor_opt.step(grads)
        if step % self.target_every == 0:
            polyak(self.q_target_flat, self.q_flat, self.tau)
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
        return self.actor_opt, self.q_opt, self.alpha_opt

    @property
    def flats(self) -> list[np.ndarray]:
        """Every learnt array, as a checkpoint stores them."""
        return [self.actor_flat, self.q_flat, self.q_target_flat, self.log_alpha]


def polyak(target: np.ndarray, online: np.ndarray, tau: float) -> None:
    """``target <- (1 - tau) target + tau online``, in place (SB3's ``polyak_update``)."""
    target *= 1.0 - tau
    target += tau * online


@common.single_threaded
def train(env_id: str, args: Args | dict | None = None, seed: int = 0, total_timesteps: int | None = None,
          progress: common.ProgressFn | None = None, checkpoint_path: str | None = None,
          checkpoint_every: int = 10_000, should_stop: common.StopFn | None = None,
          env_kwargs: dict | None = None, *, check: common.CheckFn | None = None,
          check_every: int = 5_000) -> common.TrainResult:
    """Train SAC on ``env_id``; callbacks as in :func:`actors.rl.agents.dqn.train`."""
    args = common.resolve_args(Args, args)
    total = common.timestep_budget(total_timesteps, DEFAULT_TIMESTEPS)
    return run_off_policy(NAME, SoftActorCritic, env_id, args, seed, total, progress, checkpoint_path, checkpoint_every,
                should_stop, env_kwargs, check, check_every)


def run_off_policy(name, learner_cls, env_id, args, seed, total, progress, checkpoint_path, checkpoint_every,
                   should_stop, env_kwargs, check, check_every) -> common.TrainResult:
    """The off-policy loop SAC and TD3 share: random actions until ``learning_starts``, then the
    learner's exploration; a training block of ``gradient_steps`` every ``train_frequency`` steps;
    checkpoints holding the networks, the optimisers, the replay buffer and the RNG, so a resumed
    run continues where it stopped."""
    hooks = common.Hooks(total, progress, should_stop, check, check_every, checkpoint_path, checkpoint_every)
    common.tune_allocator()
    config = common.build_config(name, env_id, args, seed, total, env_kwargs)
    rng = np.random.default_rng(seed)
    env = common.make_vec_env(env_id, args.num_envs, env_kwargs)
    try:
        obs_space, act_space = env.single_observation_space, env.single_action_space
        reason = common.space_error(obs_space, act_space, discrete_actions=False, box_actions=True)
        if reason:
            raise RLError(f"{name} cannot train on {env_id}: {reason}")
        obs_shape = tuple(obs_space.shape)
        obs_dim = int(np.prod(obs_shape, dtype=np.int64))
        act_dim = int(act_space.shape[0])
        low = np.asarray(act_space.low, dtype=np.float64)
        high = np.asarray(act_space.high, dtype=np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise RLError(f"{name} needs bounded actions to squash into; {env_id} has unbounded ones")
        N = args.num_envs
        learner = learner_cls(obs_dim, act_dim, args, rng)
        flats = learner.flats
        buffer = ReplayBuffer(args.buffer_size, obs_dim, act_dim)
        env_seed = int(rng.integers(2**31 - 1))
        tracker = common.EpisodeTracker(N)
        timesteps = grad_steps = 0
        next_train = max(args.learning_starts, args.train_frequency * N)
        resumed_from = None
        last: dict = {}

        path = checkpoint_path
        resume = common.load_resumable(path, name, env_id)
        if resume is not None:
            saved, meta = resume
            common.unpack_into("param", saved, flats, path)
            for i, opt in enumerate(learner.optimizers):
                common.unpack_into(f"adam{i}_m", saved, opt.m, path)
                common.unpack_into(f"adam{i}_v", saved, opt.v, path)
                opt.t = int(meta["adam_t"][i])
            buffer.restore(saved, int(meta["rb_pos"]), path)
            timesteps, grad_steps, next_train = int(meta["timesteps"]), int(meta["grad_steps"]), int(meta["next_train"])
            rng = common.rng_from_json(meta["rng"])
            tracker = common.restored_tracker(N, saved)
            env_seed = common.env_seed_for(seed, timesteps)
            resumed_from = timesteps
            hooks.last_ckpt = hooks.last_check = timesteps

        def save() -> None:
            arrays = {**common.pack_list("param", flats), **buffer.arrays(), **common.history_arrays(tracker)}
            for i, opt in enumerate(learner.optimizers):
                arrays.update(common.pack_list(f"adam{i}_m", opt.m))
                arrays.update(common.pack_list(f"adam{i}_v", opt.v))
            common.save_checkpoint(path, arrays, {
                "agent": name, "env_id": env_id, "timesteps": timesteps, "grad_steps": grad_steps,
                "next_train": next_train, "rb_pos": buffer.pos, "adam_t": [o.t for o in learner.optimizers],
                "rng": common.rng_state_json(rng), "config": config})
            hooks.last_ckpt = timesteps

        def make_policy() -> MLPPolicy:
            return MLPPolicy(learner.acting_net(), "box", obs_shape, low, high, squash=True,
                             one_hot=common.one_hot_states(env),
                             meta={"agent": name, "env_id": env_id, "seed": seed, "timesteps": timesteps,
                                   **{k: round(float(v), 6) for k, v in last.items()}})

        obs, _ = env.reset(seed=env_seed)
        obs = np.asarray(obs, dtype=DTYPE).reshape(N, obs_dim)
        next_report = (timesteps // 1_000 + 1) * 1_000  # progress about every thousand steps, never twice
        stopped = False
        while timesteps < total and not hooks.passed:
            if hooks.interrupted():
                stopped = True
                break
            if timesteps < args.learning_starts:
                actions = rng.uniform(-1.0, 1.0, size=(N, act_dim)).astype(DTYPE)
            else:
                actions = learner.sample(obs, rng)
            next_obs, reward, term, trunc, _ = env.step(low + 0.5 * (actions.astype(np.float64) + 1.0) * (high - low))
            next_obs = np.asarray(next_obs, dtype=DTYPE).reshape(N, obs_dim)
            valid = tracker.step(reward, term, trunc)
            if valid.any():
                buffer.add(obs[valid], actions[valid], np.asarray(reward, dtype=DTYPE)[valid], next_obs[valid],
                           np.asarray(term, dtype=DTYPE)[valid])
            obs = next_obs
            timesteps += int(valid.sum())

            if timesteps >= next_train and buffer.size >= args.batch_size:
                next_train += args.train_frequency * N
                for _ in range(args.gradient_steps):
                    if hooks.interrupted():
                        break
                    grad_steps += 1
                    last = learner.update(buffer.sample(rng, args.batch_size), rng, grad_steps)
                if hooks.stopping:
                    stopped = True
                    break
                # A block here is one gradient step, not an update of thousands of steps as in PPO:
                # report about every thousand steps; checkpoint and check when they are due.
                if timesteps >= next_report:
                    next_report = (timesteps // 1_000 + 1) * 1_000
                    hooks.report(timesteps, tracker)
                if hooks.checkpoint_due(timesteps):
                    save()
                hooks.run_check(timesteps, make_policy)
                if hooks.stop_requested():
                    stopped = True
                    break
            elif timesteps >= next_report:
                next_report = (timesteps // 1_000 + 1) * 1_000
                hooks.report(timesteps, tracker)
                if hooks.stop_requested():
                    stopped = True
                    break
        return hooks.finish(timesteps=timesteps, tracker=tracker, save=save, make_policy=make_policy,
                            config=config, stopped=stopped, resumed_from=resumed_from)
    finally:
        env.close()
