"""The ``/metrics`` document: HTTP traffic, the hub's state and the build, in one registry per scrape."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric

from api.metrics.http import HttpMetrics
from api.metrics.hub import HubCollector


class _Collected:
    """Metrics from ``collect``, registered without their names being checked against ours."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.collect = collect

    def describe(self) -> list[Metric]:
        return []


def _build_info() -> Metric:
    try:
        release = version("resimhub")
    except PackageNotFoundError:
        release = "unknown"
    info = GaugeMetricFamily("resimhub_build_info", "Always 1; the version is in the label.", labels=["version"])
    info.add_metric([release], 1.0)
    return info


@dataclass
class MetricsState:
    http: HttpMetrics
    hub: HubCollector

    def exposition(self) -> bytes:
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.MultiProcessCollector(registry)  # every gateway process's HTTP metrics
        else:
            registry.register(_Collected(REGISTRY.collect))  # process_*, python_* of this process
            registry.register(self.http)
        registry.register(self.hub)
        registry.register(_Collected(lambda: [_build_info()]))
        return generate_latest(registry)
