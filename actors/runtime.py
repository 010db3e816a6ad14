"""The state an actor process shares: storage and the broker, set up once when the process boots.

Dramatiq calls actors with message arguments only, so actors find storage here. ``boot`` is called
by ``resimhub up`` (embedded) or by :mod:`actors.worker` (the ``dramatiq`` CLI entry point), never at
import time.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq

from actors.rl.sandbox import SandboxPool
from storage.context import Storage, open_storage
from storage.settings import Settings


@dataclass
class Runtime:
    storage: Storage
    broker: dramatiq.Broker
    actors: dict[str, dramatiq.Actor]
    #: The children uploaded policies run in (one started ahead of need); see actors/sandboxing.py.
    sandbox: SandboxPool

    @property
    def settings(self) -> Settings:
        return self.storage.settings


_current: Runtime | None = None


def boot(settings: Settings, *, storage: Storage | None = None) -> Runtime:
    """Open storage, build the broker and declare every actor on it."""
    global _current
    from actors.bus import build_broker, declare_actors
    from actors.sandboxing import limits

    storage = storage or open_storage(settings)
    broker = build_broker(settings)
    actors = declare_actors(broker, settings.queue_prefix)
    _current = Runtime(storage=storage, broker=broker, actors=actors, sandbox=SandboxPool(limits(settings)))
    return _current


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("the actor runtime is not booted; call actors.runtime.boot(settings) first")
    return _current


def shutdown() -> None:
    global _current
    if _current is not None:
        _current.broker.close()
        _current.sandbox.close()
        _current.storage.close()
        _current = None
