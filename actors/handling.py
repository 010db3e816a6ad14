"""What every consumer does around its handler: decode the envelope and skip events already handled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.runtime import current
from storage import ledger
from storage.events import Envelope


def already_handled(envelope: Envelope, consumer: str) -> bool:
    # A Core query on a plain connection: this runs for every message, so skip the ORM session.
    with current().storage.db.engine.connect() as conn:
        return ledger.seen_on(conn, envelope.id, consumer)


def consumer(name: str) -> Callable[[Callable[[Envelope], Any]], Callable[[dict], None]]:
    """Wrap ``handler(envelope)`` as an actor function taking the CloudEvents document."""

    def wrap(handler: Callable[[Envelope], Any]) -> Callable[[dict], None]:
        def actor_fn(event: dict) -> None:
            envelope = Envelope.from_cloudevent(event)
            if already_handled(envelope, name):
                return
            handler(envelope)

        actor_fn.__name__ = name
        actor_fn.__doc__ = handler.__doc__
        return actor_fn

    return wrap
