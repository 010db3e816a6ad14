"""Cross-entropy method over an MLP's flat weight vector (noisy CEM).

Each generation samples ``population`` weight vectors from a diagonal Gaussian, runs one episode
per candidate (all candidates at once: one vector-env copy per candidate, one batched matrix
product per layer), and refits the Gaussian to the best ``elite_frac``. Extra variance that decays
over training (Szita & Lorincz, 2006) stops the distribution collapsing before it has found good
weights. Candidates act greedily, so the learned mean is exactly the policy that is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from actors.rl import normalize
from actors.rl.agents import common
from actors.rl.errors import RLError
from actors.rl.nn import ACTIVATIONS, MLP
from actors.rl.policy import MLPPolicy

NAME = "CEM"
DEFAULT_TIMESTEPS = 300_000
DTYPE = np.float64
# Used only when neither the environment's spec nor the arguments bound an episode.
FALLBACK_EPISODE_CAP = 10_000
#: Candidates per generation, each an environment copy and a row of sampled weights: twenty times
#: the default; CEM and evolution strategies on CPUs rarely go past a few hundred.
MAX_POPULATION = 1024
#: Hidden layers: CEM searches weight space directly, which only works for small networks (the
#: default is one layer of 16). 1024 candidates of a 128-128 network on CartPole sample ~140 MB
#: of weights per generation.
MAX_HIDDEN_LAYERS = 2
MAX_HIDDEN_WIDTH = 128
#: A candidate's episode, when capped by the arguments: ten times the fallback cap.
MAX_EPISODE_STEPS = 100_000


@dataclass
class Args(normalize.ObservationArgs):
    """CEM's hyperparameters; the bounded ones (``common.limited``) are listed in docs/agents.md."""

    population: int = common.limited(50, MAX_POPULATION, minimum=2)
    """candidate weight vectors per generation (one environment copy each)"""
    elite_frac: float = 0.2
    """fraction of the population, by return, that the next distribution is fitted to"""
    hidden_sizes: tuple[int, ...] = common.limited((16,), MAX_HIDDEN_WIDTH, max_len=MAX_HIDDEN_LAYERS)
    """hidden layer widths; () gives a linear policy"""
    activation: str = "tanh"
    """hidden activation: tanh or relu"""
    init_std: float = 1.0
    """initial standard deviation of every weight"""
    extra_std: float = 0.5
    """noise standard deviation added to the refitted one at the start of training"""
    extra_std_end: float = 0.0
    """added noise once noise_decay_fraction of total_timesteps have passed"""
    noise_decay_fraction: float = 0.5
    """fraction of total_timesteps over which the added noise decays linearly"""
    max_episode_steps: int | None = common.limited(None, MAX_EPISODE_STEPS)
    """cap on a candidate's episode (None: the environment's own time limit)"""

    def __post_init__(self) -> None:
        common.check_limits(self)
        normalize.check(self)
        if not 0.0 < self.elite_frac <= 1.0:
            raise RLError("elite_frac must lie in (0, 1]")
        if max(1, int(round(self.population * self.elite_frac))) < 1:
            raise RLError("the elite must hold at least one candidate")
        if self.init_std <= 0 or self.extra_std < 0 or self.extra_std_end < 0:
            raise RLError("init_std must be > 0 and the extra noise >= 0")
        if self.activation not in ACTIVATIONS:
            raise RLError(f"activation must be one of {ACTIVATIONS}")


def agent_supports(observation_space, action_space) -> str | None:
    return common.space_error(observation_space, action_space, discrete_actions=True, box_actions=True)


def _layer_slices(sizes: list[int]) -> list[tuple[slice, tuple[int, int], slice, int]]:
    """Where each layer's weight and bias sit in the flat vector (same order as ``MLP.params``)."""
    out, offset = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        w = slice(offset, offset + fan_in * fan_out)
        offset += fan_in * fan_out
        b = slice(offset, offset + fan_out)
        offset += fan_out
        out.append((w, (fan_in, fan_out), b, fan_out))
    return out


def population_forward(thetas: np.ndarray, obs: np.ndarray, layers, activation: str) -> np.ndarray:
    """Outputs of ``P`` different MLPs, candidate ``p`` applied to observation row ``p``."""
    P = thetas.shape[0]
    h = obs[:, None, :]
    last = len(layers) - 1
    for i, (w, shape, b, _) in enumerate(layers):
        h = h @ thetas[:, w].reshape(P, *shape) + thetas[:, None, b]
        if i < last:
            h = np.tanh(h) if activation == "tanh" else np.maximum(h, 0.0)
    return h[:, 0, :]


def _episode_cap(env_id: str, args: Args) -> int:
    if args.max_episode_steps is not None:
        return int(args.max_episode_steps)
    spec = gym.spec(env_id)
    return int(spec.max_episode_steps) if spec.max_episode_steps else FALLBACK_EPISODE_CAP


@common.single_threaded
def train(env_id: str, args: Args | dict | None = None, seed: int = 0, total_timesteps: int | None = None,
          progress: common.ProgressFn | None = None, checkpoint_path: str | None = None,
          checkpoint_every: int = 10_000, should_stop: common.StopFn | None = None,
          env_kwargs: dict | None = None, *, check: common.CheckFn | None = None,
          check_every: int = 5_000) -> common.TrainResult:
    """Train CEM on ``env_id``; the ``check`` hook is described in :func:`actors.rl.agents.ppo.train`.

    Callbacks run once per generation, the unit of update here; a stop is also noticed between
    the steps of a generation, whose unfinished episodes are then discarded.
    """
    args = common.resolve_args(Args, args)
    total = common.timestep_budget(total_timesteps, DEFAULT_TIMESTEPS)
    hooks = common.Hooks(total, progress, should_stop, check, check_every, checkpoint_path, checkpoint_every)
    common.tune_allocator()
    config = common.build_config(NAME, env_id, args, seed, total, env_kwargs)
    rng = np.random.default_rng(seed)
    P = args.population
    n_elite = max(1, int(round(P * args.elite_frac)))
    env = common.make_vec_env(env_id, P, env_kwargs)
    try:
        obs_space, act_space = env.single_observation_space, env.single_action_space
        reason = agent_supports(obs_space, act_space)
        if reason:
            raise RLError(f"{NAME} cannot train on {env_id}: {reason}")
        obs_shape = tuple(obs_space.shape)
        obs_dim = int(np.prod(obs_shape, dtype=np.int64))
        discrete = isinstance(act_space, spaces.Discrete)
        n_out = int(act_space.n) if discrete else int(act_space.shape[0])
        low = None if discrete else np.asarray(act_space.low, dtype=np.float64)
        high = None if discrete else np.asarray(act_space.high, dtype=np.float64)
        net = MLP([obs_dim, *args.hidden_sizes, n_out], args.activation, rng, dtype=DTYPE)
        layers = _layer_slices(net.sizes)
        mean = np.zeros(net.num_params)
        std = np.full(net.num_params, args.init_std)
        cap = _episode_cap(env_id, args)
        # Candidates' episodes are recorded directly; the tracker only holds the history.
        tracker = common.EpisodeTracker(0)
        norm = normalize.for_run(args, (obs_dim,), P)
        normalize.refuse_one_hot(norm, common.one_hot_states(env), NAME, env_id)
        timesteps = generation = 0
        resumed_from = None

        path = checkpoint_path
        resume = common.load_resumable(path, NAME, env_id)
        if resume is not None:
            saved, meta = resume
            common.unpack_into("dist", saved, [mean, std], path)
            timesteps, generation = int(meta["timesteps"]), int(meta["generation"])
            rng = common.rng_from_json(meta["rng"])
            tracker = common.restored_tracker(0, saved)
            norm.restore(saved, path)
            resumed_from = timesteps
            hooks.last_ckpt = hooks.last_check = timesteps
        # One seed per (re)start; each generation's reset seed is then drawn from the run's RNG.
        env_rng = np.random.default_rng(common.env_seed_for(seed, timesteps) if resumed_from is not None
                                        else int(rng.integers(2**31 - 1)))

        def save() -> None:
            arrays = {**common.pack_list("dist", [mean, std]), **common.history_arrays(tracker), **norm.arrays()}
            common.save_checkpoint(path, arrays, {
                "agent": NAME, "env_id": env_id, "timesteps": timesteps, "generation": generation,
                "rng": common.rng_state_json(rng), "config": config})
            hooks.last_ckpt = timesteps

        def make_policy() -> MLPPolicy:
            net.set_flat(mean)
            meta = {"agent": NAME, "env_id": env_id, "seed": seed, "timesteps": timesteps}
            one_hot = common.one_hot_states(env)
            if discrete:
                return norm.wrap(MLPPolicy(net, "discrete", obs_shape, meta=meta, one_hot=one_hot))
            return norm.wrap(MLPPolicy(net, "box", obs_shape, low, high, meta=meta, one_hot=one_hot))

        stopped = False
        while timesteps < total and not hooks.passed:
            if hooks.stop_requested():
                stopped = True
                break
            frac = min(1.0, timesteps / max(1.0, args.noise_decay_fraction * total))
            extra = args.extra_std + (args.extra_std_end - args.extra_std) * frac
            thetas = mean + std * rng.standard_normal((P, mean.size))
            generation_result = _run_generation(env, thetas, layers, args.activation, discrete, low, high, obs_dim,
                                                cap, int(env_rng.integers(2**31 - 1)), act_space, hooks.interrupted,
                                                norm)
            if generation_result is None:
                stopped = True
                break
            returns, lengths = generation_result
            tracker.returns.extend(returns.tolist())
            tracker.lengths.extend(lengths.tolist())
            timesteps += int(lengths.sum())
            # Stable sort on the negated return: ties keep candidate order, so runs are reproducible.
            elite = thetas[np.argsort(-returns, kind="stable")[:n_elite]]
            mean = elite.mean(axis=0)
            std = np.sqrt(elite.var(axis=0) + extra * extra)
            generation += 1
            hooks.after_update(timesteps, tracker, save, make_policy)
        return hooks.finish(timesteps=timesteps, tracker=tracker, save=save, make_policy=make_policy,
                            config=config, stopped=stopped, resumed_from=resumed_from)
    finally:
        env.close()


def _run_generation(env, thetas, layers, activation, discrete, low, high, obs_dim, cap, reset_seed, act_space,
                    interrupted, norm: normalize.Normalizer):
    """One episode per candidate, all stepped together; later episodes of finished copies are
    ignored (next-step autoreset keeps them running). ``None`` if ``interrupted()`` said yes
    first: with 1024 candidates of 100,000 steps, a generation is too long to wait for."""
    P = thetas.shape[0]
    obs, _ = env.reset(seed=reset_seed)
    returns = np.zeros(P)
    lengths = np.zeros(P, dtype=np.int64)
    running = np.ones(P, dtype=bool)
    while running.any():
        if interrupted():
            return None
        raw = np.asarray(obs, dtype=DTYPE).reshape(P, obs_dim)
        norm.update_obs(raw[running])  # what the candidates still in their episode see
        out = population_forward(thetas, norm.normalize(raw), layers, activation)
        if discrete:
            action = out.argmax(axis=1)
        else:
            action = np.clip(out, low, high).astype(act_space.dtype, copy=False)
        obs, reward, term, trunc, _ = env.step(action)
        returns += np.where(running, reward, 0.0)
        lengths += running
        running &= ~(term | trunc) & (lengths < cap)
    return returns, lengths
