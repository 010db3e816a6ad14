"""Pieces every agent shares: progress/result records, argument handling, seeding, vector
environments, episode bookkeeping and atomic ``.npz`` checkpoints.

Checkpoints hold only plain arrays plus one JSON string, so ``np.load(..., allow_pickle=False)``
reads them and a checkpoint file can never execute code when it is resumed from.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from actors.rl.errors import OutOfRange, RLError


# -- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """A snapshot handed to the ``progress`` callback; cheap to build, JSON-friendly."""

    timesteps: int
    total_timesteps: int
    episodes: int
    latest_return: float | None
    fraction: float


@dataclass
class TrainResult:
    """What a run produced. ``wall_time_s`` is training time: time spent inside a ``check`` hook is
    left out, so benchmarks can evaluate mid-run without inflating it. ``episode_returns`` holds
    every finished training episode since the first start (a resumed run continues the history)."""

    policy: Any
    episode_returns: list[float]
    episode_lengths: list[int]
    timesteps: int
    episodes: int
    wall_time_s: float
    config: dict
    stopped: bool = False
    resumed_from: int | None = None
    # Set when a ``check`` hook (benchmarks, learning tests) declared the run finished early.
    check_passed: bool = False


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]
# ``check(timesteps, policy) -> bool``: an out-of-band evaluation hook; True ends training.
CheckFn = Callable[[int, Any], bool]


# -- limits -------------------------------------------------------------------------------------
#: The most environment steps one run may take, whatever the agent: the API's ``total_timesteps``
#: bound and the cap on an episode budget's step allowance. At the engine's pace (tens of thousands
#: of CartPole steps a second for PPO, far fewer for large networks) that is minutes to hours; the
#: hub's wall-time limit (RESIMHUB_TRAINING_TIME_LIMIT) bounds the slow cases.
MAX_TOTAL_TIMESTEPS = 5_000_000

#: Hidden layers of the network agents (PPO, A2C, DQN): at most this many, each at most this wide.
#: Twice the widest and deepest MLPs commonly used with these algorithms (two layers of 256).
MAX_HIDDEN_LAYERS = 4
MAX_HIDDEN_WIDTH = 512
#: Environment copies stepped together by PPO, A2C and DQN. One worker thread steps them all, so
#: beyond a few dozen more copies only cost memory.
MAX_NUM_ENVS = 64


@dataclass(frozen=True)
class Limit:
    """The range of one whole-number hyperparameter that costs time or memory.

    For a tuple field (``hidden_sizes``) the range applies to every entry and ``max_len`` bounds
    the number of entries. Declared as field metadata through :func:`limited`, so each agent's
    ``Args`` is the one place that says both a hyperparameter's default and its bounds.
    """

    maximum: int
    minimum: int = 1
    max_len: int | None = None


def limited(default: Any, maximum: int, *, minimum: int = 1, max_len: int | None = None) -> Any:
    """A dataclass field with a :class:`Limit`; ``Args.__post_init__`` enforces it with
    :func:`check_limits`."""
    return field(default=default, metadata={"limit": Limit(maximum, minimum, max_len)})


def limits_of(cls: type) -> dict[str, Limit]:
    """Every limited field of an ``Args`` class, in declaration order (for docs and the API)."""
    return {f.name: f.metadata["limit"] for f in dataclasses.fields(cls) if "limit" in f.metadata}


def hyperparameters(cls: type) -> list[dict[str, Any]]:
    """Every field of an agent's ``Args``, in declaration order, as the API and the CLI describe
    it: name, JSON type, default, bounds (for the limited fields) and the field's docstring.

    The docstrings are the string literals written under each field in the class body; they are
    read from the source with ``ast`` (never executed), so ``Args`` stays the one place that
    documents a hyperparameter.
    """
    docs = _field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        entry: dict[str, Any] = {"name": f.name, "type": _json_type(default, str(f.type)),
                                 "default": list(default) if isinstance(default, tuple) else default,
                                 "doc": docs.get(f.name)}
        limit = f.metadata.get("limit")
        if limit is not None:
            entry["minimum"], entry["maximum"] = limit.minimum, limit.maximum
            if limit.max_len is not None:
                entry["max_items"] = limit.max_len
        out.append(entry)
    return out


def _json_type(default: Any, annotation: str) -> str:
    if default is None:  # an optional number (e.g. PPO's target_kl): the annotation says which
        base = "integer" if "int" in annotation.split("|")[0] else "number"
        return f"{base} or null"
    if isinstance(default, bool):
        return "boolean"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "number"
    if isinstance(default, tuple | list):
        return "array of integers" if all(isinstance(v, int) for v in default) else "array"
    return "string"


def _field_docs(cls: type) -> dict[str, str]:
    """The field docstrings of ``cls`` and of the dataclasses it extends (a subclass's own win)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (a frozen build): names and defaults still describe it
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def check_limits(args: Any) -> None:
    """Refuse a limited field that is not a whole number within its range (``OutOfRange`` names
    the field, the bound and the value), and store whole floats (JSON's ``1e5``) as ints. Runs
    before any other validation of ``args``, so later checks may rely on these fields being sane."""
    for f in dataclasses.fields(args):
        limit = f.metadata.get("limit")
        value = getattr(args, f.name)
        if limit is None or (value is None and f.default is None):
            continue
        if isinstance(f.default, tuple):
            if not isinstance(value, tuple | list):
                raise RLError(f"{f.name} must be a list of whole numbers, got {value!r}")
            if limit.max_len is not None and len(value) > limit.max_len:
                raise OutOfRange(f.name, limit.max_len, len(value),
                                 message=f"{f.name} has {len(value)} entries; at most {limit.max_len} are allowed")
            setattr(args, f.name, tuple(_whole(f"{f.name}[{i}]", v, limit) for i, v in enumerate(value)))
        else:
            setattr(args, f.name, _whole(f.name, value, limit))


def _whole(name: str, value: Any, limit: Limit) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RLError(f"{name} must be a whole number, got {value!r}")
    # Range before type: 1e8 for n_epochs is better answered with the limit than with "not an int".
    if value > limit.maximum:
        raise OutOfRange(name, limit.maximum, value)
    if value < limit.minimum:
        raise OutOfRange(name, limit.minimum, value, bound="minimum")
    if value != value or value != int(value):  # NaN passes every comparison above
        raise RLError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def timestep_budget(total_timesteps: Any, default: int) -> int:
    """The run's step budget: ``default`` when none is given, refused above MAX_TOTAL_TIMESTEPS."""
    if total_timesteps is None:
        return default
    return _whole("total_timesteps", total_timesteps, Limit(MAX_TOTAL_TIMESTEPS, minimum=0))


# -- arguments ----------------------------------------------------------------------------------
def resolve_args(cls: type, args: Any) -> Any:
    """Accept an ``Args`` instance, a partial dict (unknown keys rejected) or ``None``."""
    if args is None:
        return cls()
    if isinstance(args, cls):
        return dataclasses.replace(args)
    if isinstance(args, dict):
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise RLError(f"unknown {cls.__module__.rsplit('.', 1)[-1]} argument(s) {unknown}; "
                          f"known: {sorted(known)}")
        values = {}
        defaults = cls()
        for key, value in args.items():
            default = getattr(defaults, key)
            # JSON round trips turn tuples into lists; keep the dataclass's own types.
            if isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            values[key] = value
        return cls(**values)
    raise RLError(f"args must be {cls.__name__}, dict or None, not {type(args).__name__}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def build_config(agent: str, env_id: str, args: Any, seed: int, total_timesteps: int,
                 env_kwargs: dict | None) -> dict:
    return _json_safe({
        "agent": agent,
        "env_id": env_id,
        "seed": int(seed),
        "total_timesteps": int(total_timesteps),
        "env_kwargs": dict(env_kwargs or {}),
        "args": dataclasses.asdict(args),
    })


# -- seeding ------------------------------------------------------------------------------------
def env_seed_for(seed: int, timesteps: int) -> int:
    """Environment seed for a (re)start: the first run and every resume get distinct streams,
    yet the value depends only on the run's seed and where it (re)starts."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(timesteps)]).generate_state(1)[0])


def rng_state_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def rng_from_json(text: str) -> np.random.Generator:
    state = json.loads(text)
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


# -- threads ------------------------------------------------------------------------------------
def single_threaded(train_fn: Callable) -> Callable:
    """Run ``train_fn`` with BLAS limited to one thread.

    Two reasons. Reproducibility: a different BLAS thread count sums matrix products in a different
    order, and RL amplifies the last-bit differences into a different learning curve (measured:
    PPO seed 0 ends at a greedy 500 with one thread and ~300 with two). Speed: the matrices here
    are far too small to gain from threads. Parallelism belongs to the workers, one run each.
    """
    import functools

    @functools.wraps(train_fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from actors.rl.evaluation import single_threaded_blas

        with single_threaded_blas():
            return train_fn(*args, **kwargs)

    return wrapper


# -- allocator ----------------------------------------------------------------------------------
_ALLOCATOR_TUNED = False


def tune_allocator() -> None:
    """Stop glibc from handing freed heap back to the OS after every numpy temporary.

    Training allocates and frees the same few 64-256 KiB activation arrays thousands of times a
    second. With glibc's defaults each free trims the heap top (or unmaps the block) and the next
    allocation page-faults fresh memory, which measured here as half of all update time. Raising
    the trim and mmap thresholds keeps that memory in the process (at most a few tens of MiB).
    Process-wide and applied once; a no-op where glibc is absent.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_trim_threshold, 64 << 20)
        libc.mallopt(m_mmap_threshold, 16 << 20)
    except (OSError, AttributeError):
        pass


# -- environments -------------------------------------------------------------------------------
def make_vec_env(env_id: str, num_envs: int, env_kwargs: dict | None = None) -> gym.vector.VectorEnv:
    """Prefer an environment's native vectorised implementation (CartPole's steps all copies in
    one numpy call) and fall back to ``SyncVectorEnv``; both use next-step autoreset, which the
    agents rely on (see :class:`EpisodeTracker`)."""
    kwargs = dict(env_kwargs or {})
    spec = gym.spec(env_id)
    if spec.vector_entry_point is not None:
        try:
            env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
        except TypeError:
            env = None
        if env is not None:
            mode = env.metadata.get("autoreset_mode")
            if mode is None or getattr(mode, "value", mode) == "NextStep":
                return _one_hot_if_discrete(env)
            env.close()
    return _one_hot_if_discrete(gym.vector.SyncVectorEnv([lambda: gym.make(env_id, **kwargs)
                                                          for _ in range(num_envs)], autoreset_mode="NextStep"))


def _one_hot_if_discrete(env: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    """A network cannot read a state index as a number (state 7 is not "more" than state 3), so
    Discrete observations reach the network agents one-hot encoded, as SB3 preprocesses them; the
    policy a training exports does the same encoding (:func:`one_hot_states`)."""
    if isinstance(env.single_observation_space, gym.spaces.Discrete):
        from gymnasium.wrappers.vector import FlattenObservation

        return FlattenObservation(env)
    return env


def one_hot_states(env: gym.vector.VectorEnv) -> int | None:
    """The number of states when ``env`` (from :func:`make_vec_env`) one-hot encodes Discrete
    observations, else ``None``: what the exported policy must encode before its network."""
    from gymnasium.wrappers.vector import FlattenObservation

    if isinstance(env, FlattenObservation) and isinstance(env.env.single_observation_space, gym.spaces.Discrete):
        return int(env.env.single_observation_space.n)
    return None


def space_error(observation_space: gym.Space, action_space: gym.Space, *,
                discrete_actions: bool, box_actions: bool) -> str | None:
    """Why a network agent cannot handle these spaces, or ``None`` if it can (Discrete
    observations are read one-hot, see :func:`make_vec_env`)."""
    if not isinstance(observation_space, gym.spaces.Box | gym.spaces.Discrete):
        return f"needs a Box or Discrete observation space, got {type(observation_space).__name__}"
    if isinstance(action_space, gym.spaces.Discrete):
        return None if discrete_actions else "needs a Box action space (Discrete actions are not supported)"
    if isinstance(action_space, gym.spaces.Box):
        if not box_actions:
            return "needs a Discrete action space (Box actions are not supported)"
        if len(action_space.shape) != 1:
            return f"needs a 1-D Box action space, got shape {action_space.shape}"
        return None
    return f"does not support {type(action_space).__name__} action spaces"


class EpisodeTracker:
    """Per-copy return/length accumulators for a next-step-autoreset vector env.

    Under next-step autoreset the call *after* a termination only resets that copy: the action is
    ignored and the reward is not part of any episode, so such steps are reported as invalid and
    must not be learnt from.
    """

    def __init__(self, num_envs: int, returns: list[float] | None = None,
                 lengths: list[int] | None = None) -> None:
        self.ret = np.zeros(num_envs, dtype=np.float64)
        self.len = np.zeros(num_envs, dtype=np.int64)
        self.prev_done = np.zeros(num_envs, dtype=bool)
        self.returns: list[float] = list(returns or [])
        self.lengths: list[int] = list(lengths or [])

    def step(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
        """Account one vector step; returns the mask of copies whose step was a real transition."""
        valid = ~self.prev_done
        self.ret += np.where(valid, reward, 0.0)
        self.len += valid
        done = (terminated | truncated) & valid
        if done.any():
            for i in np.flatnonzero(done):
                self.returns.append(float(self.ret[i]))
                self.lengths.append(int(self.len[i]))
            self.ret[done] = 0.0
            self.len[done] = 0
        self.prev_done = done
        return valid

    @property
    def latest(self) -> float | None:
        return self.returns[-1] if self.returns else None


# -- checkpoints --------------------------------------------------------------------------------
def save_checkpoint(path: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomic, so a crash mid-write leaves the previous checkpoint intact."""
    from actors.rl.policy import save_npz_atomic

    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload["__meta__"] = np.array(json.dumps(_json_safe(meta)))
    save_npz_atomic(path, payload)


def load_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise RLError(f"cannot read checkpoint {path}: {exc}") from exc
    if "__meta__" not in arrays:
        raise RLError(f"{path} is not an agent checkpoint (no metadata)")
    meta = json.loads(str(arrays.pop("__meta__")))
    return arrays, meta


def load_resumable(path: str | None, agent: str, env_id: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The checkpoint to resume from, if ``path`` names one; refused if it is another run's kind."""
    if path is None or not os.path.exists(path):
        return None
    saved, meta = load_checkpoint(path)
    check_compatible(meta, agent, env_id, path)
    return saved, meta


def restored_tracker(n: int, saved: dict[str, np.ndarray]) -> EpisodeTracker:
    """The episode history a checkpoint carried, continued by ``n`` accumulators."""
    return EpisodeTracker(n, saved["episode_returns"].tolist(), saved["episode_lengths"].tolist())


def check_compatible(meta: dict, agent: str, env_id: str, path: str) -> None:
    if meta.get("agent") != agent or meta.get("env_id") != env_id:
        raise RLError(f"checkpoint {path} is for {meta.get('agent')} on {meta.get('env_id')}, "
                      f"not {agent} on {env_id}")


def pack_list(prefix: str, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{i}": a for i, a in enumerate(arrays)}


def unpack_into(prefix: str, saved: dict[str, np.ndarray], targets: list[np.ndarray], path: str) -> None:
    for i, dst in enumerate(targets):
        key = f"{prefix}.{i}"
        if key not in saved or saved[key].shape != dst.shape:
            raise RLError(f"checkpoint {path} does not match this configuration ({key})")
        dst[...] = saved[key]


def history_arrays(tracker: EpisodeTracker) -> dict[str, np.ndarray]:
    return {
        "episode_returns": np.asarray(tracker.returns, dtype=np.float64),
        "episode_lengths": np.asarray(tracker.lengths, dtype=np.int64),
    }


# -- loop helpers -------------------------------------------------------------------------------
class Clock:
    """Training wall time that leaves out time spent in ``check`` hooks (they evaluate, which is
    not training)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.excluded = 0.0

    def run_excluded(self, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.excluded += time.perf_counter() - t0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.excluded


#: How often, at most, a long update (epochs, minibatches, gradient steps, a rollout, a CEM
#: generation) asks ``should_stop``: a stop then takes effect within this plus one gradient step,
#: and checking costs one clock read per inner iteration.
STOP_POLL_S = 0.05


@dataclass
class Hooks:
    """Bundles the caller's callbacks with the bookkeeping of when each is due."""

    total: int
    progress: ProgressFn | None = None
    should_stop: StopFn | None = None
    check: CheckFn | None = None
    check_every: int = 5_000
    checkpoint_path: str | None = None
    checkpoint_every: int = 10_000
    clock: Clock = field(default_factory=Clock)
    last_check: int = 0
    last_ckpt: int = 0
    passed: bool = False
    #: Set once ``should_stop`` said yes; the answer sticks, so every loop level sees it.
    stopping: bool = False
    next_stop_poll: float = 0.0

    def report(self, timesteps: int, tracker: EpisodeTracker) -> None:
        if self.progress is not None:
            frac = min(1.0, max(0.0, timesteps / self.total)) if self.total > 0 else 1.0
            self.progress(Progress(int(timesteps), int(self.total), len(tracker.returns),
                                   tracker.latest, float(frac)))

    def stop_requested(self) -> bool:
        """Asks ``should_stop`` now; called at update boundaries, where stopping loses nothing."""
        if not self.stopping and self.should_stop is not None:
            self.stopping = bool(self.should_stop())
            self.next_stop_poll = time.monotonic() + STOP_POLL_S
        return self.stopping

    def interrupted(self) -> bool:
        """:meth:`stop_requested` for inner loops: asks at most every ``STOP_POLL_S``, so a
        caller's callback (a database poll in the hub) is never hammered, however tight the loop."""
        if not self.stopping and self.should_stop is not None and time.monotonic() >= self.next_stop_poll:
            return self.stop_requested()
        return self.stopping

    def checkpoint_due(self, timesteps: int) -> bool:
        return self.checkpoint_path is not None and timesteps - self.last_ckpt >= self.checkpoint_every

    def run_check(self, timesteps: int, make_policy: Callable[[], Any]) -> bool:
        if self.check is None or timesteps - self.last_check < self.check_every:
            return False
        self.last_check = timesteps
        self.passed = bool(self.clock.run_excluded(lambda: self.check(timesteps, make_policy())))
        return self.passed

    def after_update(self, timesteps: int, tracker: EpisodeTracker, save: Callable[[], None],
                     make_policy: Callable[[], Any]) -> None:
        """What every agent does after an update: report, checkpoint when due, run the check hook."""
        self.report(timesteps, tracker)
        if self.checkpoint_due(timesteps):
            save()
        self.run_check(timesteps, make_policy)

    def finish(self, *, timesteps: int, tracker: EpisodeTracker, save: Callable[[], None],
               make_policy: Callable[[], Any], config: dict, stopped: bool,
               resumed_from: int | None) -> TrainResult:
        """Write the final checkpoint (unless the last one is current) and build the result. A run
        stopped before its first step still leaves one, so a stopped run always has a checkpoint."""
        path = self.checkpoint_path
        if path is not None and (timesteps != self.last_ckpt or not os.path.exists(path)):
            save()
        return TrainResult(
            policy=make_policy(), episode_returns=list(tracker.returns), episode_lengths=list(tracker.lengths),
            timesteps=timesteps, episodes=len(tracker.returns), wall_time_s=self.clock.elapsed,
            config=config, stopped=stopped, resumed_from=resumed_from, check_passed=self.passed)


# -- parameters ---------------------------------------------------------------------------------
def bind_flat(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Copy ``arrays`` into one contiguous vector and return it with same-shaped views into it.

    Callers rebind their parameters to the views so that Adam updates a single array: with a dozen
    small tensors, per-array numpy overhead costs more than the arithmetic itself.
    """
    flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0)
    views, offset = [], 0
    for a in arrays:
        views.append(flat[offset: offset + a.size].reshape(a.shape))
        offset += a.size
    return flat, views


def bind_mlp(net, views: list[np.ndarray]) -> list[np.ndarray]:
    """Point ``net``'s weights and biases at the first ``2 * layers`` of ``views``; return the rest."""
    k = len(net.weights)
    net.weights = list(views[0:2 * k:2])
    net.biases = list(views[1:2 * k:2])
    return views[2 * k:]


def flat_grad(grads: list[np.ndarray]) -> list[np.ndarray]:
    return [np.concatenate([g.ravel() for g in grads])]


class RMSprop:
    """RMSprop as PyTorch (and so Stable-Baselines3's A2C) computes it, without momentum; same
    ``lr`` / ``step`` / ``m`` / ``v`` / ``t`` surface as :class:`actors.rl.nn.Adam`."""

    def __init__(self, params: list[np.ndarray], lr: float = 7e-4, alpha: float = 0.99, eps: float = 1e-5,
                 max_grad_norm: float | None = None) -> None:
        self.params = params
        self.lr = lr
        self.alpha = alpha
        self.eps = eps
        self.max_grad_norm = max_grad_norm
        self.v = [np.zeros_like(p) for p in params]
        self.m = [np.zeros_like(p) for p in params]  # unused; keeps checkpoints uniform with Adam
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> float:
        norm = float(np.sqrt(sum(float(np.sum(g * g)) for g in grads)))
        scale = 1.0
        if self.max_grad_norm is not None and norm > self.max_grad_norm:
            scale = self.max_grad_norm / (norm + 1e-12)
        self.t += 1
        for p, g, v in zip(self.params, grads, self.v, strict=True):
            g = g * scale
            v *= self.alpha
            v += (1.0 - self.alpha) * g * g
            p -= self.lr * g / (np.sqrt(v) + self.eps)
        return norm
