"""Greedy evaluation of a policy over exactly N episodes (docs/architecture.md, "The evaluation protocol").

Two modes, because reproducibility and throughput pull in different directions:

``exact``
    Episode *i* runs on an environment reset with ``seed + i``, so each return is a function of
    (policy, env, seed, i) alone, whatever the number of parallel environments. A pool of ordinary
    ``gymnasium.make`` environments is stepped in lockstep so that the policy sees one batch per
    step; when an environment finishes, it takes the next episode index. Returns are reported in
    episode order. The result equals :func:`single_env_loop` with the same seed.

``fast``
    Gymnasium's own vector environment (``make_vec``, the native vectorised implementation where
    the environment has one, e.g. CartPole, otherwise a synchronous vector of copies). The whole
    vector is reset once with ``seed``, so results are deterministic for a seed but episode *i* is
    not tied to ``seed + i``. To avoid favouring short episodes (the first N episodes to *finish*
    are disproportionately short ones), every sub-environment gets a fixed quota of episodes
    decided before the run; returns are listed sub-environment by sub-environment.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import gymnasium
import numpy as np
from gymnasium import spaces

from actors.rl.envspec import EnvSpecError, make_env
from actors.rl.errors import RLError
from actors.rl.policy import Policy, check_policy_spaces
from actors.rl.stats import summarize

Mode = Literal["exact", "fast"]

DEFAULT_EXACT_ENVS = 32
DEFAULT_FAST_ENVS_NATIVE = 1024  # native vector envs cost little per extra column
DEFAULT_FAST_ENVS_SYNC = 16  # a sync vector steps every copy in Python; idle copies are waste
# Episodes of environments registered without a time limit are cut here so a policy that never
# fails cannot hang an evaluation.
DEFAULT_STEP_CAP = 100_000

ProgressFn = Callable[[int, int], None]

_blas_lock = threading.Lock()
_blas_controller: Any = None


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS (OpenBLAS/MKL) to one thread for the duration of a ``with`` block.

    Policy batches here are small (hundreds of rows by 64 columns); a multithreaded BLAS gains
    nothing on them and, on a machine whose other cores are busy, its threads wait on each other:
    measured on the 2-core development box, a 1000×4 → 64 → 64 → 2 forward pass took ~5 ms with two
    BLAS threads against ~0.3 ms with one. Parallelism belongs to the workers (one evaluation or
    training run each). The limit is process-wide (threadpoolctl has no per-thread limits), so
    overlapping evaluations in threads may restore it early; that costs speed, never correctness.
    """
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a declared dependency
        return contextlib.nullcontext()
    with _blas_lock:
        if _blas_controller is None:
            _blas_controller = ThreadpoolController()  # scanning loaded libraries costs ~20 ms once
    return _blas_controller.limit(limits=1, user_api="blas")


@dataclass
class EvaluationResult:
    """One evaluation: per-episode data, summary statistics and what is needed to reproduce it.

    ``latency_ms`` is policy time per environment step (one decision, amortised over the batch);
    ``policy_call_ms`` is the mean time of one batched ``act`` call.
    """

    env_id: str
    spec_id: str
    env_version: int | None
    gymnasium_version: str
    mode: str
    seed: int
    episodes: int
    num_envs: int
    vectorization: str
    returns: list[float]
    lengths: list[int]
    mean: float
    std: float
    median: float
    min: float
    max: float
    iqm: float
    ci95: list[float]
    score: float
    mean_length: float
    total_steps: int
    latency_ms: float
    policy_call_ms: float
    steps_per_second: float
    wall_time_s: float
    policy: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe: built-in numbers only, non-finite values as ``None``."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- adapting policy outputs and observations to a space ---------------------------------------

def _obs_buffer(space: spaces.Space, n: int) -> np.ndarray:
    if isinstance(space, spaces.Discrete):
        return np.zeros(n, dtype=np.int64)
    return np.zeros((n, *space.shape), dtype=space.dtype)


def _obs_offset(space: spaces.Space) -> int:
    # A Discrete(n, start=s) observation is a table index only after subtracting s.
    return int(space.start) if isinstance(space, spaces.Discrete) else 0


def _batch_actions(space: spaces.Space, actions: np.ndarray) -> np.ndarray:
    """Policy output for n environments -> an array of n actions in the env's own dtype/shape."""
    if isinstance(space, spaces.Discrete):
        acts = np.asarray(actions, dtype=np.int64)
        return acts + int(space.start) if space.start else acts
    n = actions.shape[0]
    return np.asarray(actions, dtype=space.dtype).reshape(n, *space.shape)


def _idle_actions(space: spaces.Space, n: int) -> np.ndarray:
    """Placeholder policy outputs for sub-environments whose results are no longer needed."""
    if isinstance(space, spaces.Discrete):
        return np.zeros(n, dtype=np.int64)
    low = np.where(np.isfinite(space.low), space.low, 0.0)
    high = np.where(np.isfinite(space.high), space.high, 0.0)
    mid = ((low + high) / 2.0).reshape(-1)
    return np.tile(mid, (n, 1))


def _per_env_actions(space: spaces.Space, actions: np.ndarray) -> list:
    # Python ints for Discrete spaces: that is what a user's hand-written loop would pass.
    batch = _batch_actions(space, actions)
    return batch.tolist() if isinstance(space, spaces.Discrete) else list(batch)


def _spec_info(env: Any, env_id: str) -> tuple[str, int | None]:
    spec = getattr(env, "spec", None)
    if spec is None:
        return env_id, None
    return spec.id, spec.version


def _make_kwargs(env_id: str, env_kwargs: dict | None) -> dict:
    kwargs = dict(env_kwargs or {})
    try:
        spec = gymnasium.spec(env_id)
    except Exception:  # make_env will report an unknown id with suggestions
        return kwargs
    if spec.max_episode_steps is None and "max_episode_steps" not in kwargs:
        kwargs["max_episode_steps"] = DEFAULT_STEP_CAP
    return kwargs


def _validate(episodes: int, seed: int) -> None:
    if not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise RLError(f"episodes must be a positive integer, got {episodes!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise RLError(f"seed must be a non-negative integer, got {seed!r}")


# -- reference loop ----------------------------------------------------------------------------

def single_env_loop(policy: Policy, env_id: str, episodes: int, seed: int,
                    env_kwargs: dict | None = None) -> tuple[list[float], list[int]]:
    """The obvious loop: one environment, one episode after another, ``reset(seed=seed + i)``.

    It is the definition exact mode must reproduce and the baseline the benchmark compares with.
    """
    _validate(episodes, seed)
    env = make_env(env_id, _make_kwargs(env_id, env_kwargs))
    try:
        check_policy_spaces(policy, env.observation_space, env.action_space, env_id)
        obs_space, act_space = env.observation_space, env.action_space
        offset = _obs_offset(obs_space)
        returns: list[float] = []
        lengths: list[int] = []
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, steps, done = 0.0, 0, False
            while not done:
                batch = np.asarray(obs)[None] - offset if offset else np.asarray(obs)[None]
                action = _per_env_actions(act_space, policy.act(batch))[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(steps)
        return returns, lengths
    finally:
        env.close()


# -- exact mode --------------------------------------------------------------------------------

def _run_exact(policy: Policy, env_id: str, episodes: int, seed: int, num_envs: int,
               env_kwargs: dict | None, progress: ProgressFn | None) -> dict:
    n = max(1, min(num_envs, episodes))
    kwargs = _make_kwargs(env_id, env_kwargs)
    envs = [make_env(env_id, kwargs) for _ in range(n)]
    try:
        obs_space, act_space = envs[0].observation_space, envs[0].action_space
        check_policy_spaces(policy, obs_space, act_space, env_id)
        spec_id, version = _spec_info(envs[0], env_id)
        offset = _obs_offset(obs_space)
        buf = _obs_buffer(obs_space, n)
        returns = [0.0] * episodes
        lengths = [0] * episodes
        slot_episode = [0] * n
        slot_return = [0.0] * n
        slot_length = [0] * n
        next_episode = 0
        for k in range(n):
            obs, _ = envs[k].reset(seed=seed + next_episode)
            buf[k] = obs
            slot_episode[k] = next_episode
            next_episode += 1
        active = list(range(n))
        steps_fns = [e.step for e in envs]
        policy_time = 0.0
        calls = 0
        finished = 0
        clock = time.perf_counter
        while active:
            batch = buf if len(active) == n else buf[active]
            if offset:
                batch = batch - offset
            t0 = clock()
            raw = policy.act(batch)
            policy_time += clock() - t0
            calls += 1
            acts = _per_env_actions(act_space, raw)
            retired = False
            for j, k in enumerate(active):
                obs, reward, terminated, truncated, _ = steps_fns[k](acts[j])
                slot_return[k] += float(reward)
                slot_length[k] += 1
                if terminated or truncated:
                    ep = slot_episode[k]
                    returns[ep] = slot_return[k]
                    lengths[ep] = slot_length[k]
                    finished += 1
                    if progress is not None:
                        progress(finished, episodes)
                    slot_return[k] = 0.0
                    slot_length[k] = 0
                    if next_episode < episodes:
                        obs, _ = envs[k].reset(seed=seed + next_episode)
                        slot_episode[k] = next_episode
                        next_episode += 1
                    else:
                        slot_episode[k] = -1
                        retired = True
                        continue
                buf[k] = obs
            if retired:
                active = [k for k in active if slot_episode[k] >= 0]
        return {"returns": returns, "lengths": lengths, "policy_time": policy_time, "calls": calls,
                "num_envs": n, "vectorization": "lockstep-pool", "spec_id": spec_id, "version": version}
    finally:
        for e in envs:
            e.close()


# -- fast mode ---------------------------------------------------------------------------------

def _make_vector(env_id: str, n: int | None, episodes: int, env_kwargs: dict | None):
    """The native vector env where there is one, else a synchronous one (next-step autoreset)."""
    from gymnasium.vector import AutoresetMode

    kwargs = _make_kwargs(env_id, env_kwargs)
    try:
        spec = gymnasium.spec(env_id)
    except Exception:
        make_env(env_id, env_kwargs)  # raises the EnvSpecError with close matches
        raise
    if spec.vector_entry_point is not None:
        size = max(1, min(n or DEFAULT_FAST_ENVS_NATIVE, episodes))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return gymnasium.make_vec(env_id, num_envs=size, vectorization_mode="vector_entry_point",
                                          **kwargs), "vector_entry_point"
        except (ImportError, TypeError, gymnasium.error.Error):
            pass  # e.g. a JAX-backed entry point without JAX, or kwargs it does not accept
    make_env(env_id, env_kwargs).close()  # surfaces an unbuildable env as EnvSpecError
    size = max(1, min(n or DEFAULT_FAST_ENVS_SYNC, episodes))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            env = gymnasium.make_vec(env_id, num_envs=size, vectorization_mode="sync",
                                     vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP}, **kwargs)
    except Exception as exc:
        raise EnvSpecError(f"could not vectorise {env_id!r}: {type(exc).__name__}: {exc}", [],
                           code="env_failed", env_id=env_id) from None
    return env, "sync"


def _run_fast(policy: Policy, env_id: str, episodes: int, seed: int, num_envs: int | None,
              env_kwargs: dict | None, progress: ProgressFn | None) -> dict:
    from gymnasium.vector import AutoresetMode

    venv, how = _make_vector(env_id, num_envs, episodes, env_kwargs)
    try:
        n = venv.num_envs
        obs_space, act_space = venv.single_observation_space, venv.single_action_space
        check_policy_spaces(policy, obs_space, act_space, env_id)
        spec = gymnasium.spec(env_id)
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise RLError(f"{env_id}: vector autoreset mode {mode} is not supported in fast mode")
        next_step = mode == AutoresetMode.NEXT_STEP
        offset = _obs_offset(obs_space)
        quota = np.full(n, episodes // n, dtype=np.int64)
        quota[: episodes % n] += 1
        table_r = np.zeros((n, int(quota.max())), dtype=np.float64)
        table_l = np.zeros((n, int(quota.max())), dtype=np.int64)
        count = np.zeros(n, dtype=np.int64)
        ep_ret = np.zeros(n, dtype=np.float64)
        ep_len = np.zeros(n, dtype=np.int64)
        prev_done = np.zeros(n, dtype=bool)
        obs, _ = venv.reset(seed=seed)
        policy_time = 0.0
        calls = 0
        finished = 0
        clock = time.perf_counter
        filler = _batch_actions(act_space, _idle_actions(act_space, n))
        need = count < quota
        all_needed = True
        any_prev_done = False
        while finished < episodes:
            batch = np.asarray(obs) - offset if offset else obs
            t0 = clock()
            if all_needed:
                actions = _batch_actions(act_space, policy.act(batch))
            else:
                # Sub-envs that met their quota still step (the vector steps as one) but their
                # results are discarded, so the policy is not run for them.
                actions = filler.copy()
                actions[need] = _batch_actions(act_space, policy.act(batch[need]))
            policy_time += clock() - t0
            calls += 1
            obs, reward, terminated, truncated, _ = venv.step(actions)
            done = terminated | truncated
            if next_step and any_prev_done:
                # These columns were reset by this call; their reward/flags are not a transition.
                live = ~prev_done
                reward = np.where(live, reward, 0.0)
                ep_len += live
                done &= live
            else:
                ep_len += 1
            ep_ret += reward
            any_prev_done = bool(done.any())
            if any_prev_done:
                for j in np.flatnonzero(done & need):
                    table_r[j, count[j]] = ep_ret[j]
                    table_l[j, count[j]] = ep_len[j]
                    count[j] += 1
                    finished += 1
                    if progress is not None:
                        progress(finished, episodes)
                ep_ret[done] = 0.0
                ep_len[done] = 0
                need = count < quota
                all_needed = bool(need.all())
            prev_done = done
        returns = [float(v) for j in range(n) for v in table_r[j, : quota[j]]]
        lengths = [int(v) for j in range(n) for v in table_l[j, : quota[j]]]
        return {"returns": returns, "lengths": lengths, "policy_time": policy_time, "calls": calls,
                "num_envs": n, "vectorization": how, "spec_id": spec.id, "version": spec.version}
    finally:
        venv.close()


# -- public entry point ------------------------------------------------------------------------

def evaluate(policy: Policy, env_id: str, episodes: int, seed: int, mode: Mode = "exact",
             num_envs: int | None = None, env_kwargs: dict | None = None,
             progress: ProgressFn | None = None) -> EvaluationResult:
    """Run ``policy`` greedily for exactly ``episodes`` episodes of ``env_id`` and summarise them.

    ``progress(done, total)`` is called as episodes finish (throttling is the caller's business).
    Raises :class:`EnvSpecError` for an environment that cannot be built and
    :class:`~actors.rl.errors.PolicyMismatchError` when the policy does not fit its spaces.
    """
    _validate(episodes, seed)
    if num_envs is not None and num_envs < 1:
        raise RLError(f"num_envs must be positive, got {num_envs}")
    if mode not in ("exact", "fast"):
        raise RLError(f"mode must be 'exact' or 'fast', not {mode!r}")
    with single_threaded_blas():
        start = time.perf_counter()
        if mode == "exact":
            run = _run_exact(policy, env_id, int(episodes), int(seed), num_envs or DEFAULT_EXACT_ENVS,
                             env_kwargs, progress)
        else:
            run = _run_fast(policy, env_id, int(episodes), int(seed), num_envs, env_kwargs, progress)
        wall = time.perf_counter() - start
    returns, lengths = run["returns"], run["lengths"]
    total_steps = int(sum(lengths))
    summary = summarize(returns, seed=int(seed))
    return EvaluationResult(
        env_id=env_id,
        spec_id=run["spec_id"],
        env_version=run["version"],
        gymnasium_version=gymnasium.__version__,
        mode=mode,
        seed=int(seed),
        episodes=int(episodes),
        num_envs=int(run["num_envs"]),
        vectorization=run["vectorization"],
        returns=[float(r) for r in returns],
        lengths=[int(v) for v in lengths],
        mean=summary["mean"],
        std=summary["std"],
        median=summary["median"],
        min=summary["min"],
        max=summary["max"],
        iqm=summary["iqm"],
        ci95=summary["ci95"],
        score=summary["score"],
        mean_length=float(np.mean(lengths)),
        total_steps=total_steps,
        latency_ms=1000.0 * run["policy_time"] / max(total_steps, 1),
        policy_call_ms=1000.0 * run["policy_time"] / max(run["calls"], 1),
        steps_per_second=total_steps / wall if wall > 0 else 0.0,
        wall_time_s=wall,
        policy=_plain(policy.describe()),
    )
