"""What the hub can run: Gymnasium ids and agent names, with suggestions for near misses."""

from __future__ import annotations

import difflib
import math
from functools import cache

from actors.rl.errors import OutOfRange
from api.errors import Invalid


@cache
def _gym_ids() -> tuple[str, ...]:
    import gymnasium

    return tuple(sorted(gymnasium.envs.registry.keys()))


def close_env_matches(name: str, limit: int = 5) -> list[str]:
    ids = _gym_ids()
    lowered = {i.lower(): i for i in ids}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.5)
    return [lowered[m] for m in matches]


def require_known_env(name: str) -> str:
    if name in _gym_ids():
        return name
    matches = close_env_matches(name)
    hint = f"; did you mean {', '.join(matches)}?" if matches else ""
    raise Invalid(f"unknown Gymnasium environment id {name!r}{hint}", code="unknown_environment",
                  details={"env_name": name, "close_matches": matches})


def agent_names() -> list[str]:
    from actors.rl.agents import AGENTS

    return sorted(AGENTS)


def require_known_agent(name: str) -> str:
    known = agent_names()
    upper = name.upper().replace("-", "")
    if upper in known:
        return upper
    raise Invalid(f"unknown agent {name!r}; known agents: {', '.join(known)}", code="unknown_agent",
                  details={"agent": name, "known": known})


def describe_agents() -> list[dict]:
    """Every agent the hub trains, as ``GET /api/agents`` lists them (see :func:`describe_agent`)."""
    return [describe_agent(name) for name in agent_names()]


def describe_agent(name: str) -> dict:
    """One agent: what it is, the spaces it trains on, its default budget and every hyperparameter
    with its type, default, bounds and documentation, all read from the agent's own module, so
    what a client is told is what the engine will do."""
    from actors.rl.agents import get_agent
    from actors.rl.agents.common import MAX_TOTAL_TIMESTEPS, hyperparameters
    from actors.rl.agents.presets import WITHOUT_PRESET, presets_of

    agent = require_known_agent(name)
    module = get_agent(agent)
    probes = [("Box", "Discrete"), ("Box", "Box"), ("Discrete", "Discrete")]
    spaces = [{"observation": obs, "action": act} for obs, act in probes
              if module.agent_supports(_space({"type": obs}), _space({"type": act})) is None]
    return {"name": agent, "description": (module.__doc__ or "").strip().split("\n")[0],
            "spaces": spaces, "default_timesteps": module.DEFAULT_TIMESTEPS,
            "max_total_timesteps": MAX_TOTAL_TIMESTEPS, "hyperparameters": hyperparameters(module.Args),
            "presets": [p.describe() for p in presets_of(agent)],
            "without_preset": [{"env_name": env, "reason": why} for (a, env), why in WITHOUT_PRESET.items()
                               if a == agent]}


def preset_for(agent: str, env_name: str):
    """RL-Zoo's tuned preset for ``agent`` on ``env_name`` (:mod:`actors.rl.agents.presets`), or None."""
    from actors.rl.agents.presets import preset_for as lookup

    return lookup(agent, env_name)


def agent_env_mismatch(agent: str, spec: dict) -> str | None:
    """Why ``agent`` cannot train on the environment a verification ``spec`` describes (its
    ``space_to_dict`` spaces), asked of the agent itself, or ``None``."""
    from actors.rl.agents import get_agent

    spaces = (_space(spec.get("observation_space") or {}), _space(spec.get("action_space") or {}))
    return get_agent(agent).agent_supports(*spaces)


def _space(described: dict):
    """A stand-in space of the described kind and shape, enough for an agent's ``agent_supports``
    (which looks at kinds and shapes, never at values); kinds the agents do not take come back as
    an empty ``Tuple``, which every agent refuses by name."""
    import gymnasium as gym
    import numpy as np

    kind = described.get("type")
    if kind == "Discrete":
        return gym.spaces.Discrete(int(described.get("n") or 2), start=int(described.get("start") or 0))
    if kind == "Box":
        return gym.spaces.Box(-1.0, 1.0, shape=tuple(described.get("shape") or (2,)), dtype=np.float32)
    return gym.spaces.Tuple(())


def check_hyperparams(agent: str, hyperparams: dict) -> dict:
    """Refuse hyperparameters the agent does not have, so a typo never silently trains defaults."""
    import dataclasses

    from actors.rl.agents import get_agent

    fields = {f.name: f for f in dataclasses.fields(get_agent(agent).Args)}
    unknown = sorted(set(hyperparams) - set(fields))
    if unknown:
        raise Invalid(f"unknown hyperparameters for {agent}: {', '.join(unknown)}", code="unknown_hyperparameter",
                      details={"unknown": unknown, "known": sorted(fields)})
    for key, value in hyperparams.items():
        if not _finite(value):
            # The API refuses such JSON at the door (api/jsonbody.py); this catches rows stored before
            # it did, so training one is refused before anything is queued, not after.
            raise Invalid(f"hyperparameter {key} must be a finite number, got {value!r}",
                          code="invalid_hyperparameter", details={"field": key})
        default = fields[key].default
        if isinstance(default, bool) or default is None:
            ok = isinstance(value, bool) or default is None
        elif isinstance(default, tuple):
            ok = isinstance(value, list | tuple)
        elif isinstance(default, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise Invalid(f"hyperparameter {key} must be like {default!r}, got {value!r}",
                          code="invalid_hyperparameter", details={"field": key})
    try:
        get_agent(agent).Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in hyperparams.items()})
    except OutOfRange as exc:
        raise out_of_range(exc, agent) from None
    except Exception as exc:  # noqa: BLE001 - the agent's own validation message is the answer
        raise Invalid(f"invalid hyperparameters for {agent}: {exc}", code="invalid_hyperparameter") from None
    return hyperparams


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def out_of_range(exc: OutOfRange, agent: str) -> Invalid:
    """A hyperparameter beyond its agent's limit (docs/agents.md), as a 422 ``validation_error``
    whose details have the shape of the schema's own field errors plus the limit and the value."""
    value = exc.value
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no infinity
    kind = "less_than_equal" if exc.bound == "maximum" else "greater_than_equal"
    return Invalid(f"hyperparameter {exc} for {agent}", code="validation_error", details=[
        {"field": f"hyperparams.{exc.field}", "message": str(exc), "type": kind, "limit": exc.limit, "value": value}])
