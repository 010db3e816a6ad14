"""Opening a stored model for the validate and evaluate actors alike.

Both read the file the same way (the same loader options from the model row) so that a model
validated as, say, a tanh network with the ``actor`` stack is evaluated as exactly that network.

Every uploaded model runs in the sandbox, whatever its format: trust is never extended to a file
because of what it looks like. The one exception is decided by where a file came from, not by its
content: a model the hub's own ``train`` actor wrote into the artifact store (``source ==
"training"``) is read in the worker, because no byte of it came from outside, and a pipeline of
hundreds of short trainings would otherwise pay a process start per evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.rl.sandbox import SandboxedPolicy, SandboxLimits, SandboxPool
from storage.context import Storage
from storage.models import Model
from storage.settings import Settings


def limits(settings: Settings) -> SandboxLimits:
    """The sandbox limits with the ``RESIMHUB_SANDBOX_*`` settings that were given applied."""
    given = {
        "memory_bytes": settings.sandbox_memory_mb * 1024 * 1024 if settings.sandbox_memory_mb else None,
        "cpu_seconds": settings.sandbox_cpu_seconds,
        "load_timeout_s": settings.sandbox_load_timeout_s,
        "step_timeout_s": settings.sandbox_step_timeout_s,
        "evaluation_timeout_s": settings.sandbox_evaluation_timeout_s,
    }
    return SandboxLimits(**{k: v for k, v in given.items() if v is not None})


def loader_options(model: Model) -> dict[str, Any]:
    """The keyword arguments of ``load_policy`` that the model row states (JSON-safe)."""
    options = dict(model.options or {})
    out: dict[str, Any] = {"env_id": model.env_name, "activation": model.activation}
    for key in ("prefix", "action_scaling", "normalization"):
        if options.get(key) is not None:
            out[key] = options[key]
    return out


class LocalPolicy:
    """A model the hub trained, loaded in the worker, with :class:`SandboxedPolicy`'s interface
    (``loaded`` summary, context manager) so that callers need not know which one they hold."""

    def __init__(self, loaded) -> None:
        self._policy = loaded.policy
        self.loaded = loaded.to_dict()
        self.kind = getattr(self._policy, "kind", None)
        self.head = self._policy.head
        self.obs_shape = self._policy.obs_shape
        self.n_inputs = self._policy.n_inputs
        self.n_outputs = self._policy.n_outputs

    def act(self, obs_batch):
        return self._policy.act(obs_batch)

    def describe(self) -> dict:
        return {**self._policy.describe(), "sandboxed": False}

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalPolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def open_model(pool: SandboxPool, storage: Storage, path: str, options: dict[str, Any], *, max_bytes: int,
               trained_here: bool = False,
               cancelled: Callable[[], bool] | None = None) -> SandboxedPolicy | LocalPolicy:
    """Load the stored file at ``path`` (relative to the artifacts): in a child of ``pool``, or in
    this process when ``trained_here`` (see the module docstring)."""
    kwargs = {k: v for k, v in options.items() if v is not None}
    if trained_here:
        from actors.rl.modelfiles import load_policy

        return LocalPolicy(load_policy(storage.artifacts.path(path), max_bytes=max_bytes, **kwargs))
    return pool.open(storage.artifacts.path(path), cancelled=cancelled, max_bytes=max_bytes, **kwargs)
