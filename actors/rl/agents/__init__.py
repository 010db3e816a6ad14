"""Numpy RL agents that really learn: PPO, A2C, DQN, CEM, SAC, TD3 and tabular Q-learning.

Every agent module exposes the same surface, which the pipeline actors and the CLI rely on:

* ``Args``: a dataclass of hyperparameters, one documented field each, defaults tuned for
  CartPole-v1 (Q-learning: for Taxi);
* ``DEFAULT_TIMESTEPS``: the step budget those defaults are meant for;
* ``train(env_id, args=None, seed=0, total_timesteps=None, progress=None, checkpoint_path=None,
  checkpoint_every=10_000, should_stop=None, env_kwargs=None) -> TrainResult``;
* ``agent_supports(observation_space, action_space) -> str | None``.

``args`` may be an ``Args``, a partial dict (unknown keys raise ``RLError``) or ``None``; the
fields that cost time or memory declare upper bounds (``common.limited``; docs/agents.md), and
values beyond them, like a ``total_timesteps`` above ``common.MAX_TOTAL_TIMESTEPS``, raise
``OutOfRange``. ``progress`` receives a :class:`Progress` at most once per update (callers throttle
further); ``should_stop`` is polled at every update boundary and, inside long updates, at most
every ``common.STOP_POLL_S``, so a stop never waits for the rest of an update. A checkpoint (an
``allow_pickle=False`` npz, written atomically) is written every ``checkpoint_every`` steps, when
stopped, and at the end; if ``checkpoint_path`` exists at the start, training resumes from it, with
the environment re-seeded from ``(seed, checkpoint timesteps)``. The same arguments and seed give
the same learning curve on the same machine.
"""

from __future__ import annotations

from types import ModuleType

from actors.rl.agents import a2c, cem, dqn, ppo, qlearning, sac, td3
from actors.rl.agents.common import Progress, TrainResult

AGENTS: dict[str, ModuleType] = {
    "PPO": ppo,
    "A2C": a2c,
    "DQN": dqn,
    "CEM": cem,
    "QLEARNING": qlearning,
    "SAC": sac,
    "TD3": td3,
}

__all__ = ["AGENTS", "Progress", "TrainResult", "agent_supports", "get_agent"]


def _key(name: str) -> str:
    # "q-learning", "Q_Learning" and "qlearning" all name the same agent.
    return str(name).upper().replace("-", "").replace("_", "").replace(" ", "")


def get_agent(name: str) -> ModuleType:
    """The agent module for ``name`` (case-insensitive); ``KeyError`` lists the known names."""
    try:
        return AGENTS[_key(name)]
    except KeyError:
        raise KeyError(f"unknown agent {name!r}; known agents: {', '.join(AGENTS)}") from None


def agent_supports(name: str, observation_space, action_space) -> str | None:
    """``None`` if agent ``name`` can train on these spaces, else a sentence saying why not."""
    return get_agent(name).agent_supports(observation_space, action_space)
