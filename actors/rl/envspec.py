"""Building and describing Gymnasium environments, with errors a user can act on.

Gymnasium's own failures range from a typo in an id to a missing optional dependency (Box2D,
MuJoCo, ALE) to an environment that crashes on its first step. Everything in the engine creates
environments through :func:`make_env` so that each of those becomes one :class:`EnvSpecError`
with close matches and a plain reason, rather than an assortment of library exceptions.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from typing import Any

import gymnasium
import numpy as np
from gymnasium import error as gym_error
from gymnasium import spaces

from actors.rl.errors import EnvSpecError

# Bounds are listed in a description only up to this many elements; beyond that they are noise.
_MAX_LISTED_BOUNDS = 64

# Namespaces and their packages, so a missing third-party family gets a useful message.
_KNOWN_NAMESPACES = {
    "ALE": 'the Atari environments need `pip install "gymnasium[atari]"` (ale-py)',
    "MiniGrid": "the MiniGrid environments need `pip install minigrid`",
    "BabyAI": "the BabyAI environments need `pip install minigrid`",
}


#: Gymnasium's environment families that need one of this package's optional extras, by the
#: module their entry point lives in.
_EXTRAS = {"gymnasium.envs.box2d.": "box2d", "gymnasium.envs.mujoco.": "mujoco"}


def extra_for(env_id: str) -> str | None:
    """The optional extra of this package (``pip install -e '.[box2d]'``) that ``env_id`` needs, if any."""
    try:
        entry = gymnasium.spec(env_id).entry_point
    except Exception:  # noqa: BLE001 - an unknown id needs no extra; make_env says what it is
        return None
    module = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
    return next((extra for prefix, extra in _EXTRAS.items() if module.startswith(prefix)), None)


def _missing(env_id: str, exc: BaseException) -> EnvSpecError:
    extra = extra_for(env_id)
    if extra is None:
        return EnvSpecError(f"environment {env_id!r} needs a dependency that is not installed: {exc}",
                            [], code="missing_dependency", env_id=env_id)
    return EnvSpecError(f"environment {env_id!r} needs the {extra!r} extra, which is not installed here: "
                        f"pip install -e '.[{extra}]' in a checkout, or pip install 'resimhub[{extra}]' "
                        f"(gymnasium said: {exc})", [], code="missing_dependency", env_id=env_id, extra=extra)


def _registry_ids() -> list[str]:
    return sorted(gymnasium.envs.registry.keys())


def close_env_matches(name: str, n: int = 5) -> list[str]:
    """Registered ids that look like ``name``: same base name in another version, then fuzzy ones."""
    ids = _registry_ids()
    if not name:
        return []
    base = re.sub(r"-v\d+$", "", name).lower()
    same_base = [i for i in ids if re.sub(r"-v\d+$", "", i).lower() == base]
    by_lower: dict[str, str] = {}
    for i in ids:
        by_lower.setdefault(i.lower(), i)
    fuzzy = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    out: list[str] = []
    for candidate in [*same_base, *(by_lower[f] for f in fuzzy)]:
        if candidate not in out and candidate != name:
            out.append(candidate)
    return out[:n]


def _unknown(env_id: str, reason: str) -> EnvSpecError:
    matches = close_env_matches(env_id)
    hint = f"; did you mean {', '.join(matches)}?" if matches else ""
    return EnvSpecError(f"unknown environment {env_id!r}: {reason}{hint}", matches, env_id=env_id)


def make_env(env_id: str, env_kwargs: dict | None = None, **make_kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make`` whose failures are all :class:`EnvSpecError`."""
    if not isinstance(env_id, str) or not env_id.strip():
        raise EnvSpecError("an environment id is required", [], env_id=str(env_id))
    kwargs = {**(env_kwargs or {}), **make_kwargs}
    try:
        with warnings.catch_warnings():
            # Gymnasium warns about old versions through DeprecationWarning; not the caller's problem.
            warnings.simplefilter("ignore", DeprecationWarning)
            return gymnasium.make(env_id, **kwargs)
    except gym_error.NamespaceNotFound:
        namespace = env_id.split("/", 1)[0]
        reason = _KNOWN_NAMESPACES.get(namespace, f"namespace {namespace!r} is not installed")
        raise EnvSpecError(f"environment {env_id!r} is not available: {reason}", close_env_matches(env_id),
                           code="missing_dependency", env_id=env_id) from None
    except (gym_error.UnregisteredEnv, gym_error.DeprecatedEnv) as exc:
        raise _unknown(env_id, str(exc).split(".")[0].replace("`", "")) from None
    except gym_error.DependencyNotInstalled as exc:
        raise _missing(env_id, exc) from None
    except ImportError as exc:
        if extra_for(env_id) is not None:
            raise _missing(env_id, exc) from None
        raise EnvSpecError(f"environment {env_id!r} cannot be built here: {exc}", [],
                           code="missing_dependency", env_id=env_id) from None
    except TypeError as exc:
        raise EnvSpecError(f"environment {env_id!r} rejected its arguments {sorted(kwargs)}: {exc}", [],
                           code="bad_env_kwargs", env_id=env_id) from None
    except Exception as exc:  # an entry point can raise anything; the caller needs one error type
        raise EnvSpecError(f"environment {env_id!r} failed to build: {type(exc).__name__}: {exc}", [],
                           code="env_failed", env_id=env_id) from None


_SPACES_CACHE: dict[str, tuple[spaces.Space, spaces.Space]] = {}


def env_spaces(env_id: str, env_kwargs: dict | None = None) -> tuple[spaces.Space, spaces.Space]:
    """``(observation_space, action_space)`` of ``env_id``, cached for kwarg-free ids.

    Model loading checks shapes against an environment on every upload; building CartPole each
    time is cheap but building some environments is not.
    """
    if not env_kwargs and env_id in _SPACES_CACHE:
        return _SPACES_CACHE[env_id]
    env = make_env(env_id, env_kwargs)
    try:
        result = (env.observation_space, env.action_space)
    finally:
        env.close()
    if not env_kwargs:
        _SPACES_CACHE[env_id] = result
    return result


def _bounds(values: np.ndarray) -> list | None:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size > _MAX_LISTED_BOUNDS or not np.all(np.isfinite(flat)):
        return None
    return [float(v) for v in flat]


def space_to_dict(space: spaces.Space) -> dict:
    """A JSON-safe description of a space (type, shape, dtype, and bounds or counts where useful)."""
    out: dict[str, Any] = {"type": type(space).__name__}
    shape = getattr(space, "shape", None)
    out["shape"] = list(shape) if shape is not None else None
    dtype = getattr(space, "dtype", None)
    out["dtype"] = str(np.dtype(dtype)) if dtype is not None else None
    if isinstance(space, spaces.Discrete):
        out["n"] = int(space.n)
        out["start"] = int(space.start)
    elif isinstance(space, spaces.Box):
        out["low"] = _bounds(space.low)
        out["high"] = _bounds(space.high)
        out["bounded"] = bool(space.is_bounded("both"))
    elif isinstance(space, spaces.MultiDiscrete):
        out["nvec"] = np.asarray(space.nvec).tolist()
    elif isinstance(space, spaces.MultiBinary):
        out["n"] = np.asarray(space.n).tolist()
    elif isinstance(space, spaces.Tuple):
        out["spaces"] = [space_to_dict(s) for s in space.spaces]
    elif isinstance(space, spaces.Dict):
        out["spaces"] = {k: space_to_dict(s) for k, s in space.spaces.items()}
    return out


def _entry_point_name(entry_point: Any) -> str | None:
    if entry_point is None:
        return None
    if isinstance(entry_point, str):
        return entry_point
    module = getattr(entry_point, "__module__", "")
    return f"{module}:{getattr(entry_point, '__qualname__', repr(entry_point))}"


def describe_env(env_id: str, seed: int = 0, env_kwargs: dict | None = None, steps: int = 5) -> dict:
    """Build ``env_id``, reset and step it briefly with ``seed``, and describe it as JSON.

    The smoke steps catch environments that register and build but fail once used (a broken
    dependency, an incompatible wrapper), which is what "verified" should mean.
    """
    env = make_env(env_id, env_kwargs)
    try:
        spec = env.spec
        try:
            env.reset(seed=seed)
            env.action_space.seed(seed)
            taken = 0
            for _ in range(steps):
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                taken += 1
                if not math.isfinite(float(reward)):
                    raise ValueError(f"reward {reward!r} is not a finite number")
                if terminated or truncated:
                    env.reset(seed=seed + 1)
        except EnvSpecError:
            raise
        except Exception as exc:
            raise EnvSpecError(f"environment {env_id!r} failed while being stepped: {type(exc).__name__}: {exc}",
                               [], code="env_failed", env_id=env_id) from None
        threshold = spec.reward_threshold if spec is not None else None
        return {
            "env_id": env_id,
            "spec_id": spec.id if spec is not None else env_id,
            "version": spec.version if spec is not None else None,
            "observation_space": space_to_dict(env.observation_space),
            "action_space": space_to_dict(env.action_space),
            "reward_threshold": float(threshold) if threshold is not None else None,
            "max_episode_steps": spec.max_episode_steps if spec is not None else None,
            "gymnasium_version": gymnasium.__version__,
            "entry_point": _entry_point_name(spec.entry_point) if spec is not None else None,
            "vector_entry_point": _entry_point_name(spec.vector_entry_point) if spec is not None else None,
            "nondeterministic": bool(spec.nondeterministic) if spec is not None else False,
            "smoke_test": {"seed": seed, "steps": taken},
        }
    finally:
        env.close()
