"""What SAC and TD3 share: their common hyperparameters, the twin critics with their targets, and
the off-policy training loop with its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.rl import normalize
from actors.rl.agents import common
from actors.rl.agents.dqn import MAX_BATCH_SIZE, MAX_BUFFER_SIZE, MAX_GRADIENT_STEPS, ReplayBuffer
from actors.rl.errors import RLError
from actors.rl.nn import ACTIVATIONS, MLP, Adam
from actors.rl.policy import MLPPolicy

DTYPE = np.float32


@dataclass
class OffPolicyArgs(normalize.Args):
    """The hyperparameters SAC and TD3 both have (each agent's ``Args`` sets its own defaults)."""

    num_envs: int = common.limited(1, common.MAX_NUM_ENVS)
    """environment copies stepped together (each step of each copy is one timestep)"""
    hidden_sizes: tuple[int, ...] = common.limited((256, 256), common.MAX_HIDDEN_WIDTH,
                                                   max_len=common.MAX_HIDDEN_LAYERS)
    """hidden layer widths of the actor and of each critic"""
    activation: str = "relu"
    """hidden activation: relu or tanh"""
    learning_rate: float = 1e-3
    """Adam step size of every network (and of SAC's entropy coefficient)"""
    buffer_size: int = common.limited(1_000_000, MAX_BUFFER_SIZE)
    """replay buffer capacity in transitions"""
    learning_starts: int = 100
    """environment steps taken with uniformly random actions before the first gradient step"""
    batch_size: int = common.limited(256, MAX_BATCH_SIZE)
    """transitions per gradient step"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak coefficient of the target networks (1: copy)"""
    train_frequency: int = 1
    """environment steps (per copy) between training blocks"""
    gradient_steps: int = common.limited(1, MAX_GRADIENT_STEPS, minimum=0)
    """gradient steps per training block"""

    def __post_init__(self) -> None:
        common.check_limits(self)
        normalize.check(self)
        if self.buffer_size < self.batch_size:
            raise RLError("buffer_size must be >= batch_size")
        if self.train_frequency < 1 or self.learning_starts < 0:
            raise RLError("train_frequency must be >= 1 and learning_starts >= 0")
        if self.learning_rate <= 0 or not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise RLError("learning_rate must be > 0, gamma in [0, 1] and tau in (0, 1]")
        if self.activation not in ACTIVATIONS:
            raise RLError(f"activation must be one of {ACTIVATIONS}")


class TwinCritics:
    """Two Q-networks over (observation, action) and their Polyak-averaged targets, each pair in one
    flat vector, with one Adam for both; the clipped double-Q target takes the smaller."""

    def __init__(self, obs_dim: int, act_dim: int, args: OffPolicyArgs, rng: np.random.Generator,
                 dtype=DTYPE) -> None:
        sizes = [obs_dim + act_dim, *args.hidden_sizes, 1]
        self.q1 = MLP(sizes, args.activation, rng, dtype=dtype)
        self.q2 = MLP(sizes, args.activation, rng, dtype=dtype)
        self.flat, views = common.bind_flat(self.q1.params + self.q2.params)
        common.bind_mlp(self.q2, common.bind_mlp(self.q1, views))
        self.q1_target, self.q2_target = self.q1.copy(), self.q2.copy()
        self.target_flat, views = common.bind_flat(self.q1_target.params + self.q2_target.params)
        common.bind_mlp(self.q2_target, common.bind_mlp(self.q1_target, views))
        self.opt = Adam([self.flat], lr=args.learning_rate)
        self.obs_dim = obs_dim

    def target_min(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        both = np.concatenate([obs, actions], axis=1)
        return np.minimum(self.q1_target.forward(both), self.q2_target.forward(both))[:, 0]

    def loss_and_grads(self, obs: np.ndarray, actions: np.ndarray, target: np.ndarray
                       ) -> tuple[float, list[np.ndarray]]:
        """``0.5 * (MSE(Q1) + MSE(Q2))`` against ``target`` (SB3's critic loss) and its gradient."""
        n = obs.shape[0]
        taken = np.concatenate([obs, actions], axis=1)
        q1, c1 = self.q1.forward_cache(taken)
        q2, c2 = self.q2.forward_cache(taken)
        d1, d2 = q1[:, 0] - target, q2[:, 0] - target
        loss = 0.5 * float(np.mean(d1 * d1) + np.mean(d2 * d2))
        return loss, common.flat_grad(self.q1.backward(c1, (d1 / n)[:, None]) + self.q2.backward(c2, (d2 / n)[:, None]))

    def value_and_action_grad(self, obs: np.ndarray, actions: np.ndarray, *, smaller: bool
                              ) -> tuple[np.ndarray, np.ndarray]:
        """``mean(Q)`` per row at ``actions`` (the smaller of the two with ``smaller``, else Q1) and
        the gradient of its batch mean with respect to the actions, the critics held fixed."""
        n = obs.shape[0]
        acting = np.concatenate([obs, actions], axis=1)
        p1, c1 = self.q1.forward_cache(acting)
        if not smaller:
            return p1[:, 0], self.q1.input_grad(c1, np.full((n, 1), 1.0 / n, dtype=p1.dtype))[:, self.obs_dim:]
        p2, c2 = self.q2.forward_cache(acting)
        first = (p1 <= p2).astype(p1.dtype)
        grad = self.q1.input_grad(c1, first / n) + self.q2.input_grad(c2, (1.0 - first) / n)
        return np.minimum(p1, p2)[:, 0], grad[:, self.obs_dim:]

    def update_targets(self, tau: float) -> None:
        polyak(self.target_flat, self.flat, tau)


def polyak(target: np.ndarray, online: np.ndarray, tau: float) -> None:
    """``target <- (1 - tau) target + tau online``, in place (SB3's ``polyak_update``)."""
    target *= 1.0 - tau
    target += tau * online


def run_off_policy(name, learner_cls, env_id, args, seed, total, progress, checkpoint_path, checkpoint_every,
                   should_stop, env_kwargs, check, check_every) -> common.TrainResult:
    """The loop SAC and TD3 share: random actions until ``learning_starts``, then the
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
        norm = normalize.for_run(args, (obs_dim,), N)
        normalize.refuse_one_hot(norm, common.one_hot_states(env), name, env_id)
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
            norm.restore(saved, path)
            env_seed = common.env_seed_for(seed, timesteps)
            resumed_from = timesteps
            hooks.last_ckpt = hooks.last_check = timesteps

        def save() -> None:
            arrays = {**common.pack_list("param", flats), **buffer.arrays(), **common.history_arrays(tracker),
                      **norm.arrays()}
            for i, opt in enumerate(learner.optimizers):
                arrays.update(common.pack_list(f"adam{i}_m", opt.m))
                arrays.update(common.pack_list(f"adam{i}_v", opt.v))
            common.save_checkpoint(path, arrays, {
                "agent": name, "env_id": env_id, "timesteps": timesteps, "grad_steps": grad_steps,
                "next_train": next_train, "rb_pos": buffer.pos, "adam_t": [o.t for o in learner.optimizers],
                "rng": common.rng_state_json(rng), "config": config})
            hooks.last_ckpt = timesteps

        def make_policy() -> MLPPolicy:
            return norm.wrap(MLPPolicy(learner.acting_net(), "box", obs_shape, low, high, squash=True,
                                       one_hot=common.one_hot_states(env),
                                       meta={"agent": name, "env_id": env_id, "seed": seed, "timesteps": timesteps,
                                             **{k: round(float(v), 6) for k, v in last.items()}}))

        obs, _ = env.reset(seed=env_seed)
        obs = np.asarray(obs, dtype=DTYPE).reshape(N, obs_dim)
        norm.update_obs(obs)  # the buffer keeps raw transitions, normalised when sampled
        next_report = (timesteps // 1_000 + 1) * 1_000  # progress about every thousand steps, never twice
        stopped = False
        while timesteps < total and not hooks.passed:
            if hooks.interrupted():
                stopped = True
                break
            if timesteps < args.learning_starts:
                actions = rng.uniform(-1.0, 1.0, size=(N, act_dim)).astype(DTYPE)
            else:
                actions = learner.sample(norm.normalize(obs), rng)
            next_obs, reward, term, trunc, _ = env.step(low + 0.5 * (actions.astype(np.float64) + 1.0) * (high - low))
            next_obs = np.asarray(next_obs, dtype=DTYPE).reshape(N, obs_dim)
            valid = tracker.step(reward, term, trunc)
            norm.update_obs(next_obs)
            norm.reward(reward, term | trunc, valid)  # updates the return statistics the samples are scaled by
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
                    last = learner.update(norm.replayed(buffer.sample(rng, args.batch_size)), rng, grad_steps)
                if hooks.stopping:
                    stopped = True
                    break
                if hooks.checkpoint_due(timesteps):
                    save()
                hooks.run_check(timesteps, make_policy)
            # A training block here is one gradient step, not an update of thousands of steps as in
            # PPO, so progress goes out about every thousand steps; a stop is noticed at the top.
            if timesteps >= next_report:
                next_report = (timesteps // 1_000 + 1) * 1_000
                hooks.report(timesteps, tracker)
        return hooks.finish(timesteps=timesteps, tracker=tracker, save=save, make_policy=make_policy,
                            config=config, stopped=stopped, resumed_from=resumed_from)
    finally:
        env.close()
