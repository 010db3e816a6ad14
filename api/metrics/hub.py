"""The hub's state at scrape time, from each of its sources: the database, the webhook tables and
the broker's queues. A source that fails shows up as ``resimhub_metrics_source_up{source=…} 0``
(and the log says why, once) rather than as a failed scrape."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from api.metrics.database import WebhookState, hub_state
from api.metrics.queues import Depths, queue_families
from storage.context import Storage

log = logging.getLogger(__name__)


class HubCollector:
    """A Prometheus collector of the sources; ``broker_queues`` reads the queue depths
    (:func:`api.metrics.queues.depth_reader`) and returns ``None`` where there is no broker."""

    def __init__(self, storage: Storage, broker_queues: Callable[[], Depths | None]) -> None:
        self.storage = storage
        self.broker_queues = broker_queues
        self._webhooks = WebhookState(storage)
        self._down: set[str] = set()

    def describe(self) -> list[Metric]:
        return []  # collected only when scraped, never at registration

    def _sources(self) -> list[tuple[str, Callable[[], list[Metric] | None]]]:
        return [("database", lambda: hub_state(self.storage)), ("webhooks", self._webhooks),
                ("broker", lambda: queue_families(self.broker_queues()))]

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("resimhub_metrics_source_up", "1 when the source answered this scrape, 0 when it "
                               "failed (the log says why).", labels=["source"])
        took = GaugeMetricFamily("resimhub_metrics_source_duration_seconds", "Time this scrape spent reading the "
                                 "source.", labels=["source"])
        for name, source in self._sources():
            start = time.perf_counter()
            try:
                families = source()
                ok = True
            except Exception as exc:  # noqa: BLE001 - a failed source is a metric, never a failed scrape
                families, ok = [], False
                if name not in self._down:
                    log.warning("metrics source %s failed: %s", name, exc)
            if ok and name in self._down:
                log.info("metrics source %s answers again", name)
            (self._down.discard if ok else self._down.add)(name)
            if families is None:  # the source does not exist in this deployment
                continue
            up.add_metric([name], 1.0 if ok else 0.0)
            took.add_metric([name], time.perf_counter() - start)
            yield from families
        yield up
        yield took
