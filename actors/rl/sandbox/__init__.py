"""Uploaded policies run in a child process with no secrets and hard limits (see :mod:`.process`)."""

from actors.rl.sandbox.process import (
    Cancelled,
    SandboxedPolicy,
    SandboxError,
    SandboxLimits,
    SandboxPool,
    open_policy,
)

__all__ = ["Cancelled", "SandboxError", "SandboxLimits", "SandboxPool", "SandboxedPolicy", "open_policy"]
