"""Queue depths: the messages waiting in each stage's queue, ready, delayed or dead-lettered.

Read from the broker of the deployment, which the composition root hands in: RabbitMQ at
``RESIMHUB_BROKER_URL`` is asked with passive declares over a short connection of the scrape's own
(a cluster gateway holds no broker), and the embedded hub's in-process broker is given by
``resimhub up``, which runs it. Without either there is no such source.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import dramatiq
import pika
from dramatiq.brokers.stub import StubBroker
from pika.exceptions import ChannelClosedByBroker
from prometheus_client.core import GaugeMetricFamily, Metric

from storage.settings import Settings

#: The stages' queues, as ``actors/bus.py`` declares them (the API may not import actors; a test
#: keeps the two lists equal).
QUEUES = ("environments", "training", "evaluation", "aggregation", "models", "webhooks", "failures")

Depths = dict[str, dict[str, int]]


def depth_reader(settings: Settings, broker: dramatiq.Broker | None = None) -> Callable[[], Depths | None]:
    """How this deployment's queue depths are read: RabbitMQ's when a broker URL is set, else those
    of ``broker`` if it is the in-process one, else nothing (``None``: the source does not exist)."""
    if settings.broker_url:
        return functools.partial(rabbitmq_queue_depths, settings.broker_url, settings.queue_prefix)
    if isinstance(broker, StubBroker):
        return functools.partial(stub_queue_depths, broker, settings.queue_prefix)
    return lambda: None


def queue_families(depths: Depths | None) -> list[Metric] | None:
    if depths is None:
        return None
    messages = GaugeMetricFamily("resimhub_queue_messages", "Messages in each stage's queue: ready to be "
                                 "consumed, delayed (retries waiting for their backoff) or dead-lettered.",
                                 labels=["queue", "state"])
    consumers = GaugeMetricFamily("resimhub_queue_consumers", "Workers consuming each stage's queue "
                                  "(RabbitMQ only).", labels=["queue"])
    for queue, counts in sorted(depths.items()):
        for state in ("ready", "delayed", "dead"):
            if state in counts:
                messages.add_metric([queue, state], counts[state])
        if "consumers" in counts:
            consumers.add_metric([queue], counts["consumers"])
    return [messages, consumers]


def rabbitmq_queue_depths(url: str, prefix: str, timeout_s: float = 2.0) -> Depths:
    """Ready, delayed and dead-lettered counts per stage, from passive declares (which create nothing)."""
    params = pika.URLParameters(url)
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s + 1
    params.blocked_connection_timeout = timeout_s
    params.connection_attempts = 1
    params.retry_delay = 0
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        depths: Depths = {}
        for stage in QUEUES:
            counts: dict[str, int] = {}
            for state, suffix in (("ready", ""), ("delayed", ".DQ"), ("dead", ".XQ")):
                try:
                    ok = channel.queue_declare(prefix + stage + suffix, passive=True).method
                except ChannelClosedByBroker:  # not declared yet: nobody has used this stage
                    channel = connection.channel()
                    continue
                counts[state] = ok.message_count
                if state == "ready":
                    counts["consumers"] = ok.consumer_count
            if counts:
                depths[stage] = counts
        return depths
    finally:
        connection.close()


def stub_queue_depths(broker: StubBroker, prefix: str) -> Depths:
    """The in-process broker's queues that exist yet (a queue appears with its first actor)."""
    depths: Depths = {}
    for stage in QUEUES:
        name = prefix + stage
        if name not in broker.queues:
            continue
        delayed = broker.queues.get(name + ".DQ")
        depths[stage] = {"ready": broker.queues[name].qsize(), "delayed": delayed.qsize() if delayed else 0,
                         "dead": len(broker.dead_letters_by_queue.get(name, ()))}
    return depths
