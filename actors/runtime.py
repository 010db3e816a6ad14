"""What every actor is given: storage (and its settings), the broker, and the sandbox pool.

Dramatiq calls an actor with the message's arguments only. Instead of looking its dependencies up in
a module global, every actor function takes a :class:`Runtime` as its first parameter, bound when
:func:`declare_actors` declares it on the broker; so a test builds a runtime from a stub broker and
a scratch database and runs a real actor without booting anything else, and two runtimes never see
each other's storage. The process entry points (``resimhub up``/``relay`` in :mod:`api.cli`,
:mod:`actors.worker` for the ``dramatiq`` CLI) call :func:`boot` and keep what it returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq

from actors import bus, consumers
from actors.failures import record_give_up
from actors.rl.sandbox import SandboxPool
from actors.sandboxing import limits
from storage.context import Storage, open_storage
from storage.settings import Settings


@dataclass(frozen=True)
class Runtime:
    storage: Storage
    #: The broker every actor is declared on; it is also the registry of those actors (:attr:`actors`).
    broker: dramatiq.Broker
    #: The children uploaded policies run in (one started ahead of need); see actors/sandboxing.py.
    sandbox: SandboxPool

    @property
    def settings(self) -> Settings:
        return self.storage.settings

    @property
    def actors(self) -> dict[str, dramatiq.Actor]:
        """The actors declared on :attr:`broker`, by name (what the relay enqueues to)."""
        return {name: self.broker.get_actor(name) for name in sorted(self.broker.get_declared_actors())}

    def actor(self, name: str) -> dramatiq.Actor:
        return self.broker.get_actor(name)

    def close(self) -> None:
        self.broker.close()
        self.sandbox.close()
        self.storage.close()


def boot(settings: Settings, *, storage: Storage | None = None) -> Runtime:
    """Open storage (unless given), build the broker and declare every actor on it, bound to the runtime."""
    runtime = Runtime(storage=storage or open_storage(settings), broker=bus.build_broker(settings),
                      sandbox=SandboxPool(limits(settings)))
    declare_actors(runtime)
    return runtime


def declare_actors(runtime: Runtime) -> dict[str, dramatiq.Actor]:
    """Declare the routing table's actors and the give-up actor on ``runtime.broker``, each called
    with ``runtime`` before the message's arguments; names, queues and options are the specs'."""
    prefix = runtime.settings.queue_prefix
    declared = {bus.GIVE_UP_ACTOR: bus.declare_give_up(runtime.broker, _bound(record_give_up, runtime), prefix)}
    for spec in consumers.SPECS:
        declared[spec.name] = bus.declare(runtime.broker, spec, _bound(spec.fn, runtime), prefix)
    return declared


def _bound(fn: Callable[..., Any], runtime: Runtime) -> Callable[..., Any]:
    @functools.wraps(fn)
    def actor_fn(*args: Any, **kwargs: Any) -> Any:
        return fn(runtime, *args, **kwargs)

    return actor_fn
