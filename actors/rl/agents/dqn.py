"""Deep Q-Network (replay buffer, target network, linear epsilon schedule, Huber loss, Adam).

Training happens in blocks: every ``train_frequency`` environment steps the network takes
``gradient_steps`` minibatch steps, and the target network is re-synchronised every
``target_update_interval`` environment steps. The block structure (as in RL-Zoo's CartPole
settings) keeps numpy's per-call overhead away from the environment loop. Discrete actions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.rl import normalize
from actors.rl.agents import common
from actors.rl.agents.losses import huber_loss
from actors.rl.errors import RLError
from actors.rl.nn import ACTIVATIONS, MLP, Adam
from actors.rl.policy import MLPPolicy

NAME = "DQN"
DEFAULT_TIMESTEPS = 100_000
DTYPE = np.float32


#: Replay capacity: SB3's default, 1,000,000 transitions (two float32 observations each: 8 MB per
#: observation dimension).
MAX_BUFFER_SIZE = 1_000_000
#: Transitions per gradient step: sixteen times the largest common choice (256).
MAX_BATCH_SIZE = 4096
#: Gradient steps per training block: eight times RL-Zoo's CartPole setting (128).
MAX_GRADIENT_STEPS = 1024


@dataclass
class Args(normalize.Args):
    """DQN's hyperparameters; the bounded ones (``common.limited``) are listed in docs/agents.md."""

    num_envs: int = common.limited(4, common.MAX_NUM_ENVS)
    """environment copies stepped together; more copies amortise per-step overhead"""
    hidden_sizes: tuple[int, ...] = common.limited((64, 64), common.MAX_HIDDEN_WIDTH,
                                                   max_len=common.MAX_HIDDEN_LAYERS)
    """hidden layer widths of the Q-network"""
    activation: str = "relu"
    """hidden activation: relu or tanh"""
    learning_rate: float = 2.3e-3
    """Adam step size"""
    anneal_lr: bool = False
    """decay the step size linearly to zero at total_timesteps"""
    buffer_size: int = common.limited(50_000, MAX_BUFFER_SIZE)
    """replay buffer capacity in transitions"""
    learning_starts: int = 1_000
    """environment steps collected before the first gradient step"""
    batch_size: int = common.limited(64, MAX_BATCH_SIZE)
    """transitions per gradient step"""
    gamma: float = 0.99
    """discount factor"""
    train_frequency: int = 256
    """environment steps between training blocks"""
    gradient_steps: int = common.limited(128, MAX_GRADIENT_STEPS, minimum=0)
    """gradient steps per training block"""
    target_update_interval: int = 256
    """environment steps between target-network synchronisations"""
    exploration_fraction: float = 0.1
    """fraction of total_timesteps over which epsilon falls linearly"""
    start_e: float = 1.0
    """initial exploration rate"""
    end_e: float = 0.04
    """final exploration rate"""
    huber_delta: float = 1.0
    """TD error beyond which the loss grows linearly instead of quadratically"""
    max_grad_norm: float = 10.0
    """global gradient-norm clip"""
    double_q: bool = True
    """pick the bootstrap action with the online network (Double DQN)"""

    def __post_init__(self) -> None:
        common.check_limits(self)
        normalize.check(self)
        if self.buffer_size < self.batch_size:
            raise RLError("buffer_size must be >= batch_size")
        if self.train_frequency < 1 or self.target_update_interval < 1:
            raise RLError("train_frequency and target_update_interval must be >= 1")
        if self.learning_rate <= 0 or not 0.0 <= self.gamma <= 1.0:
            raise RLError("learning_rate must be > 0 and gamma in [0, 1]")
        if self.activation not in ACTIVATIONS:
            raise RLError(f"activation must be one of {ACTIVATIONS}")


def agent_supports(observation_space, action_space) -> str | None:
    return common.space_error(observation_space, action_space, discrete_actions=True, box_actions=False)


class QLearner:
    """Online and target Q-networks, each stored in one flat vector, plus the TD update."""

    def __init__(self, obs_dim: int, n_actions: int, args: Args, rng: np.random.Generator,
                 dtype=DTYPE) -> None:
        self.q = MLP([obs_dim, *args.hidden_sizes, n_actions], args.activation, rng, dtype=dtype)
        self.flat, views = common.bind_flat(self.q.params)
        common.bind_mlp(self.q, views)
        self.target = self.q.copy()
        self.target_flat, views = common.bind_flat(self.target.params)
        common.bind_mlp(self.target, views)
        self.opt = Adam([self.flat], lr=args.learning_rate, max_grad_norm=args.max_grad_norm)
        self.gamma = args.gamma
        self.delta = args.huber_delta
        self.double_q = args.double_q

    def sync_target(self) -> None:
        self.target_flat[...] = self.flat

    def loss_and_grads(self, obs, actions, rewards, next_obs, terminated) -> tuple[float, list[np.ndarray]]:
        """Huber TD loss against a fixed target and its gradient w.r.t. the online parameters."""
        q_next_all = self.target.forward(next_obs)
        if self.double_q:
            best = self.q.forward(next_obs).argmax(axis=1)
            q_next = q_next_all[np.arange(best.size), best]
        else:
            q_next = q_next_all.max(axis=1)
        target = rewards + self.gamma * (1.0 - terminated) * q_next
        q_all, cache = self.q.forward_cache(obs)
        rows = np.arange(actions.size)
        loss, g = huber_loss(q_all[rows, actions], target, self.delta)
        g_out = np.zeros_like(q_all)
        g_out[rows, actions] = g
        return loss, common.flat_grad(self.q.backward(cache, g_out))


class ReplayBuffer:
    """Transitions in preallocated arrays, overwritten oldest first. Discrete actions are stored as
    integers; ``action_dim`` stores continuous ones (SAC, TD3) as float rows."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int | None = None) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=DTYPE)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=DTYPE)
        self.actions = (np.zeros(capacity, dtype=np.int64) if action_dim is None
                        else np.zeros((capacity, action_dim), dtype=DTYPE))
        self.rewards = np.zeros(capacity, dtype=DTYPE)
        self.terminated = np.zeros(capacity, dtype=DTYPE)
        self.pos = 0
        self.size = 0

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        n = obs.shape[0]
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.next_obs[idx] = next_obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.terminated[idx] = terminated
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(self, rng: np.random.Generator, batch: int):
        idx = rng.integers(0, self.size, size=batch)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx]

    def arrays(self) -> dict[str, np.ndarray]:
        n = self.size
        return {"rb_obs": self.obs[:n], "rb_next_obs": self.next_obs[:n], "rb_actions": self.actions[:n],
                "rb_rewards": self.rewards[:n], "rb_terminated": self.terminated[:n]}

    def restore(self, saved: dict[str, np.ndarray], pos: int, path: str) -> None:
        n = saved["rb_obs"].shape[0]
        if (n > self.capacity or saved["rb_obs"].shape[1:] != self.obs.shape[1:]
                or saved["rb_actions"].shape[1:] != self.actions.shape[1:]):
            raise RLError(f"checkpoint {path} replay buffer does not fit this configuration")
        self.obs[:n] = saved["rb_obs"]
        self.next_obs[:n] = saved["rb_next_obs"]
        self.actions[:n] = saved["rb_actions"]
        self.rewards[:n] = saved["rb_rewards"]
        self.terminated[:n] = saved["rb_terminated"]
        self.size, self.pos = n, pos


@common.single_threaded
def train(env_id: str, args: Args | dict | None = None, seed: int = 0, total_timesteps: int | None = None,
          progress: common.ProgressFn | None = None, checkpoint_path: str | None = None,
          checkpoint_every: int = 10_000, should_stop: common.StopFn | None = None,
          env_kwargs: dict | None = None, *, check: common.CheckFn | None = None,
          check_every: int = 5_000) -> common.TrainResult:
    """Train DQN on ``env_id``; the ``check`` hook is described in :func:`actors.rl.agents.ppo.train`.

    Callbacks run after each training block (every ``train_frequency`` steps); a stop is also
    noticed between environment steps and between a block's gradient steps.
    """
    args = common.resolve_args(Args, args)
    total = common.timestep_budget(total_timesteps, DEFAULT_TIMESTEPS)
    hooks = common.Hooks(total, progress, should_stop, check, check_every, checkpoint_path, checkpoint_every)
    common.tune_allocator()
    config = common.build_config(NAME, env_id, args, seed, total, env_kwargs)
    rng = np.random.default_rng(seed)
    env = common.make_vec_env(env_id, args.num_envs, env_kwargs)
    try:
        obs_space, act_space = env.single_observation_space, env.single_action_space
        reason = agent_supports(obs_space, act_space)
        if reason:
            raise RLError(f"{NAME} cannot train on {env_id}: {reason}")
        obs_shape = tuple(obs_space.shape)
        obs_dim = int(np.prod(obs_shape, dtype=np.int64))
        n_actions = int(act_space.n)
        N = args.num_envs
        learner = QLearner(obs_dim, n_actions, args, rng)
        buffer = ReplayBuffer(args.buffer_size, obs_dim)
        env_seed = int(rng.integers(2**31 - 1))
        tracker = common.EpisodeTracker(N)
        norm = normalize.for_run(args, (obs_dim,), N)
        normalize.refuse_one_hot(norm, common.one_hot_states(env), NAME, env_id)
        timesteps = grad_steps = 0
        next_train = max(args.learning_starts, args.train_frequency)
        next_target = next_train + args.target_update_interval
        resumed_from = None

        path = checkpoint_path
        resume = common.load_resumable(path, NAME, env_id)
        if resume is not None:
            saved, meta = resume
            common.unpack_into("param", saved, [learner.flat, learner.target_flat], path)
            common.unpack_into("adam_m", saved, learner.opt.m, path)
            common.unpack_into("adam_v", saved, learner.opt.v, path)
            learner.opt.t = int(meta["adam_t"])
            buffer.restore(saved, int(meta["rb_pos"]), path)
            timesteps, grad_steps = int(meta["timesteps"]), int(meta["grad_steps"])
            next_train, next_target = int(meta["next_train"]), int(meta["next_target"])
            rng = common.rng_from_json(meta["rng"])
            tracker = common.restored_tracker(N, saved)
            norm.restore(saved, path)
            env_seed = common.env_seed_for(seed, timesteps)
            resumed_from = timesteps
            hooks.last_ckpt = hooks.last_check = timesteps

        def save() -> None:
            arrays = {**common.pack_list("param", [learner.flat, learner.target_flat]),
                      **common.pack_list("adam_m", learner.opt.m), **common.pack_list("adam_v", learner.opt.v),
                      **buffer.arrays(), **common.history_arrays(tracker), **norm.arrays()}
            common.save_checkpoint(path, arrays, {
                "agent": NAME, "env_id": env_id, "timesteps": timesteps, "grad_steps": grad_steps,
                "next_train": next_train, "next_target": next_target, "rb_pos": buffer.pos,
                "adam_t": learner.opt.t, "rng": common.rng_state_json(rng), "config": config})
            hooks.last_ckpt = timesteps

        def make_policy() -> MLPPolicy:
            return norm.wrap(MLPPolicy(learner.q, "discrete", obs_shape, one_hot=common.one_hot_states(env),
                                       meta={"agent": NAME, "env_id": env_id, "seed": seed, "timesteps": timesteps}))

        explore_steps = max(1.0, args.exploration_fraction * total)
        obs, _ = env.reset(seed=env_seed)
        obs = np.asarray(obs, dtype=DTYPE).reshape(N, obs_dim)
        norm.update_obs(obs)  # the buffer keeps raw transitions, normalised when sampled
        stopped = False
        while timesteps < total and not hooks.passed:
            if hooks.interrupted():
                stopped = True
                break
            eps = args.start_e + (args.end_e - args.start_e) * min(1.0, timesteps / explore_steps)
            explore = rng.random(N) < eps
            actions = rng.integers(0, n_actions, size=N)
            if not explore.all():
                greedy = learner.q.forward(norm.normalize(obs)).argmax(axis=1)
                actions = np.where(explore, actions, greedy)
            next_obs, reward, term, trunc, _ = env.step(actions)
            next_obs = np.asarray(next_obs, dtype=DTYPE).reshape(N, obs_dim)
            valid = tracker.step(reward, term, trunc)
            norm.update_obs(next_obs)
            norm.reward(reward, term | trunc, valid)  # updates the return statistics the samples are scaled by
            if valid.all():
                buffer.add(obs, actions, reward, next_obs, term)
            elif valid.any():
                buffer.add(obs[valid], actions[valid], reward[valid], next_obs[valid], term[valid])
            obs = next_obs
            timesteps += int(valid.sum())

            if timesteps >= next_train:
                next_train += args.train_frequency
                if args.anneal_lr:
                    learner.opt.lr = args.learning_rate * max(0.0, 1.0 - timesteps / total)
                for _ in range(args.gradient_steps):
                    if hooks.interrupted():
                        break
                    _, grads = learner.loss_and_grads(*norm.replayed(buffer.sample(rng, args.batch_size)))
                    learner.opt.step(grads)
                    grad_steps += 1
                if hooks.stopping:  # interrupted mid-block: no target sync, report or check
                    stopped = True
                    break
                if timesteps >= next_target:
                    learner.sync_target()
                    next_target += args.target_update_interval
                hooks.after_update(timesteps, tracker, save, make_policy)
                if hooks.stop_requested():
                    stopped = True
                    break
            elif timesteps < args.learning_starts and timesteps % 1_000 < N:
                hooks.report(timesteps, tracker)
                if hooks.stop_requested():
                    stopped = True
                    break
        return hooks.finish(timesteps=timesteps, tracker=tracker, save=save, make_policy=make_policy,
                            config=config, stopped=stopped, resumed_from=resumed_from)
    finally:
        env.close()
