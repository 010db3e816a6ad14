"""What every consumer does around its handler: decode the envelope and skip events already handled."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage import ledger
from storage.context import Storage
from storage.events import Envelope
from storage.logs import bound

if TYPE_CHECKING:  # the runtime imports the handlers; they only name it
    from actors.runtime import Runtime

log = logging.getLogger(__name__)


def already_handled(storage: Storage, envelope: Envelope, consumer: str) -> bool:
    # One Core query outside a transaction: this runs for every message, so no ORM session and no
    # BEGIN/ROLLBACK around it.
    with storage.db.single_statements.connect() as conn:
        return ledger.seen_on(conn, envelope.id, consumer)


Handler = Callable[["Runtime", Envelope], Any]


def consumer(name: str) -> Callable[[Handler], Callable[[Runtime, dict], None]]:
    """Wrap ``handler(runtime, envelope)`` as an actor function ``(runtime, event)`` taking the
    CloudEvents document; :func:`actors.runtime.declare_actors` binds the runtime."""

    def wrap(handler: Handler) -> Callable[[Runtime, dict], None]:
        def actor_fn(runtime: Runtime, event: dict) -> None:
            envelope = Envelope.from_cloudevent(event)
            task_id = envelope.data.get("task_id") if isinstance(envelope.data, dict) else None
            # Every line logged while handling carries the event and its task (storage/logs.py).
            with bound(event_id=envelope.id, task_id=task_id):
                if already_handled(runtime.storage, envelope, name):
                    log.info("%s: %s already handled, skipped", name, envelope.type)
                    return
                start = time.perf_counter()
                try:
                    handler(runtime, envelope)
                except Exception as exc:
                    log.warning("%s: %s failed: %s: %s", name, envelope.type, type(exc).__name__, exc)
                    raise
                log.info("%s: handled %s in %.3f s", name, envelope.type, time.perf_counter() - start,
                         extra={"consumer": name, "event_type": envelope.type,
                                "duration_s": round(time.perf_counter() - start, 6)})

        actor_fn.__name__ = name
        actor_fn.__doc__ = handler.__doc__
        return actor_fn

    return wrap
