"""Tabular Q-learning for environments with Discrete observations and actions (FrozenLake, Taxi).

Epsilon-greedy behaviour with a linearly decaying epsilon; exact ties between action values are
broken at random during training, otherwise the all-zero initial table would send every episode
down action 0. The learned table's argmax is the returned greedy policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from actors.rl.agents import common
from actors.rl.errors import RLError
from actors.rl.policy import TabularPolicy

NAME = "QLEARNING"
DEFAULT_TIMESTEPS = 200_000
# Random numbers are drawn in blocks: one generator call per step would dominate the loop.
_RANDOM_BLOCK = 4096
#: States x actions of the table (float64: 80 MB). No hyperparameter costs anything here; the
#: environment's spaces size the table, so this is checked when training starts.
MAX_TABLE_ENTRIES = 10_000_000


@dataclass
class Args:
    """Q-learning's hyperparameters: none of them costs time or memory (docs/agents.md)."""

    learning_rate: float = 0.5
    """step size alpha of the TD update; deterministic environments tolerate large values"""
    gamma: float = 0.99
    """discount factor"""
    start_e: float = 1.0
    """initial exploration rate"""
    end_e: float = 0.05
    """final exploration rate"""
    exploration_fraction: float = 0.5
    """fraction of total_timesteps over which epsilon falls linearly"""
    initial_q: float = 0.0
    """initial value of every table entry (optimistic values explore more)"""

    def __post_init__(self) -> None:
        if not 0.0 < self.learning_rate <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise RLError("learning_rate must lie in (0, 1] and gamma in [0, 1]")
        if not 0.0 <= self.end_e <= 1.0 or not 0.0 <= self.start_e <= 1.0:
            raise RLError("exploration rates must lie in [0, 1]")


def agent_supports(observation_space, action_space) -> str | None:
    if not isinstance(observation_space, spaces.Discrete):
        return f"needs Discrete observations (a table row per state), got {type(observation_space).__name__}"
    if not isinstance(action_space, spaces.Discrete):
        return f"needs Discrete actions, got {type(action_space).__name__}"
    if int(observation_space.start) != 0 or int(action_space.start) != 0:
        return "needs Discrete spaces that start at 0 (table rows and columns are the raw values)"
    return None


@common.single_threaded
def train(env_id: str, args: Args | dict | None = None, seed: int = 0, total_timesteps: int | None = None,
          progress: common.ProgressFn | None = None, checkpoint_path: str | None = None,
          checkpoint_every: int = 10_000, should_stop: common.StopFn | None = None,
          env_kwargs: dict | None = None, *, check: common.CheckFn | None = None,
          check_every: int = 5_000, report_every: int = 1_000) -> common.TrainResult:
    """Train tabular Q-learning on ``env_id``; the ``check`` hook is described in
    :func:`actors.rl.agents.ppo.train`. Callbacks run every ``report_every`` steps."""
    args = common.resolve_args(Args, args)
    total = common.timestep_budget(total_timesteps, DEFAULT_TIMESTEPS)
    hooks = common.Hooks(total, progress, should_stop, check, check_every, checkpoint_path, checkpoint_every)
    config = common.build_config(NAME, env_id, args, seed, total, env_kwargs)
    rng = np.random.default_rng(seed)
    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        reason = agent_supports(env.observation_space, env.action_space)
        if reason:
            raise RLError(f"{NAME} cannot train on {env_id}: {reason}")
        n_states, n_actions = int(env.observation_space.n), int(env.action_space.n)
        if n_states * n_actions > MAX_TABLE_ENTRIES:
            raise RLError(f"{NAME} cannot train on {env_id}: its table would have {n_states} x {n_actions} "
                          f"entries, more than the limit of {MAX_TABLE_ENTRIES}")
        q = np.full((n_states, n_actions), float(args.initial_q))
        tracker = common.EpisodeTracker(0)
        timesteps = 0
        resumed_from = None
        env_seed = int(rng.integers(2**31 - 1))

        path = checkpoint_path
        resume = common.load_resumable(path, NAME, env_id)
        if resume is not None:
            saved, meta = resume
            common.unpack_into("q", saved, [q], path)
            timesteps = int(meta["timesteps"])
            rng = common.rng_from_json(meta["rng"])
            tracker = common.restored_tracker(0, saved)
            env_seed = common.env_seed_for(seed, timesteps)
            resumed_from = timesteps
            hooks.last_ckpt = hooks.last_check = timesteps

        def save() -> None:
            common.save_checkpoint(path, {"q.0": q, **common.history_arrays(tracker)}, {
                "agent": NAME, "env_id": env_id, "timesteps": timesteps,
                "rng": common.rng_state_json(rng), "config": config})
            hooks.last_ckpt = timesteps

        def make_policy() -> TabularPolicy:
            return TabularPolicy(q.copy(), meta={"agent": NAME, "env_id": env_id, "seed": seed,
                                                 "timesteps": timesteps})

        explore_steps = max(1.0, args.exploration_fraction * total)
        alpha, gamma = float(args.learning_rate), float(args.gamma)
        state, _ = env.reset(seed=env_seed)
        state = int(state)
        ep_ret, ep_len = 0.0, 0
        uniforms = rng.random(_RANDOM_BLOCK)
        noise = rng.random((_RANDOM_BLOCK, n_actions))
        k = 0
        next_report = timesteps + report_every
        stopped = False
        while timesteps < total and not hooks.passed:
            if k == _RANDOM_BLOCK:
                uniforms = rng.random(_RANDOM_BLOCK)
                noise = rng.random((_RANDOM_BLOCK, n_actions))
                k = 0
            eps = args.start_e + (args.end_e - args.start_e) * min(1.0, timesteps / explore_steps)
            row = q[state]
            if uniforms[k] < eps:
                action = int(noise[k, 0] * n_actions)
            else:
                # Random tie-break among equal maxima only: noise is far below any real difference.
                action = int(np.argmax(row + noise[k] * 1e-9))
            k += 1
            next_state, reward, terminated, truncated, _ = env.step(action)
            next_state = int(next_state)
            target = reward if terminated else reward + gamma * q[next_state].max()
            row[action] += alpha * (target - row[action])
            ep_ret += float(reward)
            ep_len += 1
            timesteps += 1
            if terminated or truncated:
                tracker.returns.append(ep_ret)
                tracker.lengths.append(ep_len)
                ep_ret, ep_len = 0.0, 0
                state, _ = env.reset()
                state = int(state)
            else:
                state = next_state
            if timesteps >= next_report:
                next_report += report_every
                hooks.after_update(timesteps, tracker, save, make_policy)
                if hooks.stop_requested():
                    stopped = True
                    break
        return hooks.finish(timesteps=timesteps, tracker=tracker, save=save, make_policy=make_policy,
                            config=config, stopped=stopped, resumed_from=resumed_from)
    finally:
        env.close()
