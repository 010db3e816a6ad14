"""The actor-critic model and the on-policy training loop that PPO and A2C share.

The two algorithms differ only in how one batch of experience becomes parameter updates, so
the rollout, advantage estimation, bookkeeping, checkpointing and callbacks live here once and
each agent module supplies its own ``update`` function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from actors.rl import normalize
from actors.rl.agents import common
from actors.rl.agents.losses import (
    categorical_logp_entropy,
    categorical_sample,
    gaussian_logp_entropy,
    gaussian_sample,
    log_softmax,
    policy_gradient_loss,
    ppo_clip_loss,
    value_loss,
)
from actors.rl.errors import RLError
from actors.rl.nn import MLP, Adam
from actors.rl.policy import MLPPolicy

DTYPE = np.float32
#: Steps per copy per rollout: four times SB3's PPO default of 2048.
MAX_N_STEPS = 8192
#: Transitions per rollout (num_envs * n_steps): RL-Zoo's largest PPO rollout (32 envs x 2048
#: steps). The rollout buffers and, with one minibatch, every layer's activations scale with it.
MAX_ROLLOUT = 65_536


class ActorCritic:
    """Separate actor and critic MLPs (as in SB3's default MLP policy), plus a state-independent
    ``log_std`` vector for Box actions."""

    def __init__(self, obs_dim: int, action_space: spaces.Space, hidden: tuple[int, ...], activation: str,
                 rng: np.random.Generator, log_std_init: float = 0.0, dtype=DTYPE,
                 ortho_init: bool = False) -> None:
        self.discrete = isinstance(action_space, spaces.Discrete)
        if self.discrete:
            n_out = int(action_space.n)
            self.low = self.high = None
        else:
            n_out = int(action_space.shape[0])
            self.low = np.asarray(action_space.low, dtype=np.float64)
            self.high = np.asarray(action_space.high, dtype=np.float64)
            self.env_dtype = action_space.dtype
        # A small final-layer gain makes the initial policy nearly uniform / centred.
        self.actor = MLP([obs_dim, *hidden, n_out], activation, rng, out_gain=0.01, dtype=dtype)
        self.critic = MLP([obs_dim, *hidden, 1], activation, rng, out_gain=1.0, dtype=dtype)
        if ortho_init:
            _orthogonal_init(self.actor, 0.01, rng)
            _orthogonal_init(self.critic, 1.0, rng)
        log_std = [] if self.discrete else [np.full(n_out, log_std_init, dtype=dtype)]
        # Everything the optimiser updates lives in one flat vector (see common.bind_flat).
        self.flat, views = common.bind_flat(self.actor.params + self.critic.params + log_std)
        rest = common.bind_mlp(self.critic, common.bind_mlp(self.actor, views))
        self.log_std = rest[0] if rest else None
        self.params = [self.flat]

    # -- acting ---------------------------------------------------------------------------------
    def act(self, obs: np.ndarray, rng: np.random.Generator):
        """Sample actions; returns (stored action, env action, log-prob, value estimate)."""
        out = self.actor.forward(obs)
        value = self.critic.forward(obs)[:, 0]
        if self.discrete:
            action = categorical_sample(out, rng)
            logp = log_softmax(out)[np.arange(out.shape[0]), action]
            return action, action, logp, value
        action = gaussian_sample(out, self.log_std, rng)
        logp = gaussian_logp_entropy(out, self.log_std, action)[0]
        env_action = np.clip(action, self.low, self.high).astype(self.env_dtype, copy=False)
        return action, env_action, logp, value

    def value(self, obs: np.ndarray) -> np.ndarray:
        return self.critic.forward(obs)[:, 0]

    # -- learning -------------------------------------------------------------------------------
    def loss_and_grads(self, obs: np.ndarray, actions: np.ndarray, old_logp: np.ndarray | None,
                       adv: np.ndarray, returns: np.ndarray, *, clip: float | None, ent_coef: float,
                       vf_coef: float) -> tuple[float, list[np.ndarray], dict]:
        """Total loss ``actor_loss - ent_coef * entropy + vf_coef * value_loss`` and its gradient
        with respect to :attr:`flat` (as a one-element list, like :attr:`params`).
        ``clip=None`` selects the plain policy-gradient loss (A2C)."""
        out, acache = self.actor.forward_cache(obs)
        v, ccache = self.critic.forward_cache(obs)
        v = v[:, 0]
        n = obs.shape[0]
        if self.discrete:
            logp, ent, dlogp, dent = categorical_logp_entropy(out, actions)
        else:
            logp, ent, dlogp, dlogp_ls, dent = gaussian_logp_entropy(out, self.log_std, actions)
        stats: dict[str, float] = {}
        if clip is None:
            pg, g_logp = policy_gradient_loss(logp, adv)
        else:
            pg, g_logp, stats["clip_fraction"] = ppo_clip_loss(logp, old_logp, adv, clip)
            log_ratio = logp - old_logp
            stats["approx_kl"] = float(((np.exp(log_ratio) - 1.0) - log_ratio).mean())
        vl, g_v = value_loss(v, returns)
        entropy = float(ent.mean())
        loss = pg - ent_coef * entropy + vf_coef * vl
        g_out = g_logp[:, None] * dlogp
        if self.discrete:
            g_out -= (ent_coef / n) * dent
        grads = self.actor.backward(acache, g_out.astype(out.dtype, copy=False))
        grads += self.critic.backward(ccache, (vf_coef * g_v)[:, None].astype(v.dtype, copy=False))
        if not self.discrete:
            # The Gaussian entropy depends on log_std alone, identically for every row.
            g_ls = (g_logp[:, None] * dlogp_ls).sum(axis=0) - ent_coef * dent
            grads.append(g_ls.astype(self.log_std.dtype, copy=False))
        stats.update(policy_loss=pg, value_loss=vl, entropy=entropy)
        return float(loss), common.flat_grad(grads), stats

    def policy(self, obs_shape: tuple[int, ...], meta: dict, one_hot: int | None = None) -> MLPPolicy:
        if self.discrete:
            return MLPPolicy(self.actor, "discrete", obs_shape, meta=meta, one_hot=one_hot)
        return MLPPolicy(self.actor, "box", obs_shape, self.low, self.high, meta=meta,
                         log_std=self.log_std.copy(), one_hot=one_hot)


def _orthogonal_init(net: MLP, out_gain: float, rng: np.random.Generator) -> None:
    """Orthogonal weights (gain sqrt(2) hidden, ``out_gain`` last), the initialisation of the
    reference A2C/PPO implementations; the MLP's default is a scaled Gaussian."""
    last = len(net.weights) - 1
    for i, w in enumerate(net.weights):
        a = rng.standard_normal((max(w.shape), min(w.shape)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        q = q if q.shape == w.shape else q.T
        w[...] = q * (out_gain if i == last else np.sqrt(2.0))


def supports(observation_space: spaces.Space, action_space: spaces.Space) -> str | None:
    return common.space_error(observation_space, action_space, discrete_actions=True, box_actions=True)


def compute_gae(rewards: np.ndarray, values: np.ndarray, last_value: np.ndarray, terminated: np.ndarray,
                done: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """GAE(lambda) over a ``(T, N)`` rollout collected with next-step autoreset.

    ``values[t + 1]`` is the value of the observation returned by step ``t``, which on a
    truncation is the final observation: truncated episodes are bootstrapped, terminated ones are
    not, and ``done`` stops the recursion from leaking into the next episode. Rows of reset steps
    get meaningless values here and are masked out by the caller.
    """
    T = rewards.shape[0]
    next_values = np.concatenate([values[1:], last_value[None]], axis=0)
    deltas = rewards + gamma * next_values * (~terminated) - values
    carry = gamma * lam * (~done)
    adv = np.empty_like(deltas)
    last = np.zeros_like(last_value)
    for t in range(T - 1, -1, -1):
        last = deltas[t] + carry[t] * last
        adv[t] = last
    return adv


@dataclasses.dataclass
class Batch:
    obs: np.ndarray
    actions: np.ndarray
    logp: np.ndarray
    values: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray


#: ``update(model, opt, batch, rng, args, interrupted)``; an update with inner loops asks
#: ``interrupted()`` (cheap) between its steps and returns early when it says yes.
UpdateFn = Callable[[ActorCritic, Adam, Batch, np.random.Generator, Any, common.StopFn], dict]


def run_on_policy(agent: str, update: UpdateFn, env_id: str, args: Any, seed: int, total_timesteps: int,
                  hooks: common.Hooks, env_kwargs: dict | None) -> common.TrainResult:
    """Collect ``n_steps`` from ``num_envs`` copies, learn from the batch, repeat.

    ``args`` must carry: num_envs, n_steps, hidden_sizes, activation, learning_rate, anneal_lr,
    gamma, gae_lambda, max_grad_norm, log_std_init.
    """
    common.tune_allocator()
    config = common.build_config(agent, env_id, args, seed, total_timesteps, env_kwargs)
    rng = np.random.default_rng(seed)
    env = common.make_vec_env(env_id, args.num_envs, env_kwargs)
    try:
        obs_space, act_space = env.single_observation_space, env.single_action_space
        reason = supports(obs_space, act_space)
        if reason:
            raise RLError(f"{agent} cannot train on {env_id}: {reason}")
        obs_shape = tuple(obs_space.shape)
        obs_dim = int(np.prod(obs_shape, dtype=np.int64))
        model = ActorCritic(obs_dim, act_space, tuple(args.hidden_sizes), args.activation, rng,
                            args.log_std_init, ortho_init=getattr(args, "ortho_init", False))
        if getattr(args, "optimizer", "adam") == "rmsprop":
            opt = common.RMSprop(model.params, lr=args.learning_rate, max_grad_norm=args.max_grad_norm)
        else:
            opt = Adam(model.params, lr=args.learning_rate, eps=1e-5, max_grad_norm=args.max_grad_norm)
        env_seed = int(rng.integers(2**31 - 1))
        tracker = common.EpisodeTracker(args.num_envs)
        norm = normalize.for_run(args, (obs_dim,), args.num_envs)
        normalize.refuse_one_hot(norm, common.one_hot_states(env), agent, env_id)
        timesteps = updates = 0
        resumed_from = None

        path = hooks.checkpoint_path
        resume = common.load_resumable(path, agent, env_id)
        if resume is not None:
            saved, meta = resume
            common.unpack_into("param", saved, model.params, path)
            common.unpack_into("adam_m", saved, opt.m, path)
            common.unpack_into("adam_v", saved, opt.v, path)
            opt.t = int(meta["adam_t"])
            timesteps, updates = int(meta["timesteps"]), int(meta["updates"])
            rng = common.rng_from_json(meta["rng"])
            tracker = common.restored_tracker(args.num_envs, saved)
            norm.restore(saved, path)
            env_seed = common.env_seed_for(seed, timesteps)
            resumed_from = timesteps
            hooks.last_ckpt = hooks.last_check = timesteps

        def save() -> None:
            arrays = {**common.pack_list("param", model.params), **common.pack_list("adam_m", opt.m),
                      **common.pack_list("adam_v", opt.v), **common.history_arrays(tracker), **norm.arrays()}
            common.save_checkpoint(path, arrays, {
                "agent": agent, "env_id": env_id, "timesteps": timesteps, "updates": updates,
                "adam_t": opt.t, "rng": common.rng_state_json(rng), "config": config})
            hooks.last_ckpt = timesteps

        def make_policy() -> MLPPolicy:
            return norm.wrap(model.policy(obs_shape, {"agent": agent, "env_id": env_id, "seed": seed,
                                                      "timesteps": timesteps}, common.one_hot_states(env)))

        T, N = args.n_steps, args.num_envs
        buf_obs = np.zeros((T, N, obs_dim), dtype=DTYPE)
        buf_act = (np.zeros((T, N), dtype=np.int64) if model.discrete
                   else np.zeros((T, N, act_space.shape[0]), dtype=DTYPE))
        buf_logp = np.zeros((T, N), dtype=DTYPE)
        buf_val = np.zeros((T, N), dtype=DTYPE)
        buf_rew = np.zeros((T, N), dtype=DTYPE)
        buf_term = np.zeros((T, N), dtype=bool)
        buf_done = np.zeros((T, N), dtype=bool)
        buf_valid = np.zeros((T, N), dtype=bool)

        obs, _ = env.reset(seed=env_seed)
        obs = norm.observe(np.asarray(obs, dtype=DTYPE).reshape(N, obs_dim))
        stopped = False
        while timesteps < total_timesteps and not hooks.passed:
            if hooks.stop_requested():
                stopped = True
                break
            if args.anneal_lr:
                opt.lr = args.learning_rate * max(0.0, 1.0 - timesteps / total_timesteps)
            for t in range(T):
                if hooks.interrupted():
                    break
                action, env_action, logp, value = model.act(obs, rng)
                buf_obs[t] = obs
                buf_act[t] = action
                buf_logp[t] = logp
                buf_val[t] = value
                obs, reward, term, trunc, _ = env.step(env_action)
                obs = norm.observe(np.asarray(obs, dtype=DTYPE).reshape(N, obs_dim))
                buf_valid[t] = tracker.step(reward, term, trunc)  # the environment's own rewards
                buf_rew[t] = norm.reward(reward, term | trunc, buf_valid[t])
                buf_term[t] = term
                buf_done[t] = term | trunc
            if hooks.stopping:
                # Stopped mid-rollout: count the steps taken (their episodes are recorded already)
                # and learn nothing from a partial batch.
                timesteps += int(buf_valid[:t].sum())
                stopped = True
                break
            timesteps += int(buf_valid.sum())
            adv = compute_gae(buf_rew, buf_val, model.value(obs), buf_term, buf_done, args.gamma,
                              args.gae_lambda)
            keep = buf_valid.reshape(-1)
            batch = Batch(
                obs=buf_obs.reshape(T * N, obs_dim)[keep],
                actions=buf_act.reshape(T * N, *buf_act.shape[2:])[keep],
                logp=buf_logp.reshape(-1)[keep],
                values=buf_val.reshape(-1)[keep],
                advantages=adv.reshape(-1)[keep],
                returns=(adv + buf_val).reshape(-1)[keep],
            )
            update(model, opt, batch, rng, args, hooks.interrupted)
            updates += 1
            if hooks.stopping:  # interrupted mid-update: no report or check of a half-done update
                stopped = True
                break
            hooks.after_update(timesteps, tracker, save, make_policy)
        return hooks.finish(timesteps=timesteps, tracker=tracker, save=save, make_policy=make_policy,
                            config=config, stopped=stopped, resumed_from=resumed_from)
    finally:
        env.close()
