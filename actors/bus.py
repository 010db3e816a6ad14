"""The Dramatiq bus: which broker, and how an actor is declared on it (queue, limits, retries).

Actors are plain functions declared on an explicit broker instead of with ``@dramatiq.actor`` at
import time, so importing the code never picks a global broker and tests can build several. This
module knows no handler: the routing table (:mod:`actors.consumers`) lists them and
:func:`actors.runtime.declare_actors` declares them here, each bound to its dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import dramatiq.errors
import pika
import pika.exceptions
import redis.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.exc import DBAPIError, OperationalError

from storage.settings import Settings

QUEUES = ("environments", "training", "evaluation", "aggregation", "models", "webhooks", "failures")
GIVE_UP_ACTOR = "record_give_up"


#: How long a message keeps being retried while the database, broker or Redis is unreachable. With
#: five retries (as before) all ten trainings of a 60 s PostgreSQL cut failed
#: (tests/chaos/test_worker_database_outage.py); the outages this hub rides out are minutes long.
OUTAGE_WINDOW_S = 300
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 30_000


def retries_covering(window_s: float, min_backoff_ms: int = MIN_BACKOFF_MS,
                     max_backoff_ms: int = MAX_BACKOFF_MS) -> int:
    """Retries whose backoffs add up to ``window_s`` even at their shortest: before retry ``n``
    Dramatiq waits ``min_backoff * 2**n`` times a random 1 to 2, or, past ``max_backoff``, half to
    all of ``max_backoff``; so at least ``min(min_backoff * 2**n, max_backoff / 2)``."""
    waited, retries = 0.0, 0
    while waited < window_s * 1000:
        waited += min(min_backoff_ms * 2**retries, max_backoff_ms / 2)
        retries += 1
    return retries


@dataclass(frozen=True)
class ActorSpec:
    name: str
    fn: Callable[..., Any]
    queue: str
    time_limit_ms: int
    #: retries for transient errors only (:func:`transient`); other errors are never retried
    max_retries: int = retries_covering(OUTAGE_WINDOW_S)
    min_backoff_ms: int = MIN_BACKOFF_MS
    max_backoff_ms: int = MAX_BACKOFF_MS


def transient(exc: BaseException) -> bool:
    """Errors a retry can fix: lost connections to the database, broker or Redis."""
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


def _transient_only(retries: int, exc: BaseException) -> bool:
    return retries < 10 and transient(exc)


def build_broker(settings: Settings) -> dramatiq.Broker:
    """RabbitMQ with publisher confirms when ``RESIMHUB_BROKER_URL`` is set, else the in-process stub.

    Nothing here is made the global broker: every actor is declared on the broker returned.
    """
    if not settings.broker_url:
        return StubBroker()
    broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    if settings.worker_metrics:
        # Only worker processes turn this on (RESIMHUB_WORKER_METRICS): the dramatiq CLI then
        # forks an exporter on $dramatiq_prom_port (9191) serving every worker process's metrics.
        # Imported here because that module reads its dramatiq_prom_* settings when imported.
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    return broker


def declare(broker: dramatiq.Broker, spec: ActorSpec, fn: Callable[..., Any], prefix: str = "") -> dramatiq.Actor:
    """``fn`` as the actor ``spec`` describes, on ``prefix + spec.queue``; a message it gives up on
    goes to :data:`GIVE_UP_ACTOR`."""
    return dramatiq.Actor(
        fn,
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
            "on_retry_exhausted": GIVE_UP_ACTOR,
        },
    )


def declare_give_up(broker: dramatiq.Broker, fn: Callable[..., Any], prefix: str = "") -> dramatiq.Actor:
    """``fn(message, retry_info)`` as :data:`GIVE_UP_ACTOR` on the ``failures`` queue: retried on
    transient errors only, and giving up on nothing further itself."""
    return dramatiq.Actor(fn, broker=broker, actor_name=GIVE_UP_ACTOR, queue_name=prefix + "failures", priority=0,
                          options={"max_retries": 10, "time_limit": 60_000, "retry_when": _transient_only})


class BatchPublisher:
    """Hands a batch of messages to the broker and returns only once the broker holds all of them.

    On RabbitMQ the batch is published inside an AMQP transaction on a channel of its own: one
    round trip for the whole batch instead of one publisher confirm per message, with the same
    guarantee that a returned ``publish`` means the messages are safely queued. Other brokers (the
    in-process stub) get plain enqueues.
    """

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self._connection = None
        self._channel = None

    def _tx_channel(self):
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = pika.BlockingConnection(self.broker.parameters)
            self._channel = self._connection.channel()
            self._channel.tx_select()
        return self._channel

    def publish(self, messages: list[dramatiq.Message]) -> None:
        if not isinstance(self.broker, RabbitmqBroker):
            for message in messages:
                self.broker.enqueue(message)
            return
        try:
            for queue in {m.queue_name for m in messages}:
                self.broker.declare_queue(queue, ensure=True)
            channel = self._tx_channel()
            # The blocking channel writes each publish to the socket and polls before returning (a
            # third of the relay's CPU); the channel under it only frames the message. The frames
            # go out with the commit, which the blocking channel sends and waits for as usual.
            framing = channel._impl
            for message in messages:
                self.broker.emit_before("enqueue", message, None)
                framing.basic_publish(exchange="", routing_key=message.queue_name, body=message.encode(),
                                      properties=pika.BasicProperties(
                                          delivery_mode=2, priority=message.options.get("broker_priority")))
            channel.tx_commit()
        except Exception:
            self.close()
            raise
        for message in messages:
            self.broker.emit_after("enqueue", message, None)

    def close(self) -> None:
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
            pass
        self._connection = None
        self._channel = None
