"""The Dramatiq bus: which broker, which actors on which queues, with which options.

Actors are plain functions declared here on an explicit broker instead of with ``@dramatiq.actor``
at import time, so importing the code never picks a global broker and tests can build several.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker

from storage.settings import Settings

QUEUES = ("environments", "training", "evaluation", "aggregation", "models", "webhooks")


@dataclass(frozen=True)
class ActorSpec:
    name: str
    fn: Callable[..., Any]
    queue: str
    max_retries: int
    time_limit_ms: int
    min_backoff_ms: int = 1_000
    max_backoff_ms: int = 60_000


def transient(exc: BaseException) -> bool:
    """Errors a retry can fix: lost connections to the database, broker or Redis."""
    import dramatiq.errors
    import pika.exceptions
    import redis.exceptions
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    kinds = (pika.exceptions.AMQPError, dramatiq.errors.BrokerConnectionError, redis.exceptions.ConnectionError,
             ConnectionError, TimeoutError)
    return isinstance(exc, kinds)


def _retry_when(spec: ActorSpec) -> Callable[[int, BaseException], bool]:
    def retry_when(retries: int, exc: BaseException) -> bool:
        return retries < spec.max_retries and transient(exc)

    return retry_when


def actor_specs() -> list[ActorSpec]:
    from actors import consumers

    return consumers.SPECS


def build_broker(settings: Settings) -> dramatiq.Broker:
    if settings.broker_url:
        broker: dramatiq.Broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    else:
        broker = StubBroker()
    dramatiq.set_broker(broker)
    return broker


def declare_actors(broker: dramatiq.Broker, prefix: str = "") -> dict[str, dramatiq.Actor]:
    declared: dict[str, dramatiq.Actor] = {}
    for spec in actor_specs():
        declared[spec.name] = dramatiq.Actor(
            spec.fn,
            broker=broker,
            actor_name=spec.name,
            queue_name=prefix + spec.queue,
            priority=0,
            options={
                "max_retries": spec.max_retries,
                "time_limit": spec.time_limit_ms,
                "min_backoff": spec.min_backoff_ms,
                "max_backoff": spec.max_backoff_ms,
                "retry_when": _retry_when(spec),
            },
        )
    return declared
