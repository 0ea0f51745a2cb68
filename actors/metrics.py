"""The engine's metrics port on `ray.util.metrics`: what every Ray process of the system installs.

Ray's metrics agent on each node serves them on the node's Prometheus endpoint (the metrics export
port) and the dashboard's Metrics view charts them; Ray prefixes the names with `ray_`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.util import metrics as ray_metrics

from engine import metrics
from engine.metrics import Kind, Metric

REPORT_S = 1.0  # how often an actor turns its running counts into metric increments


class RayMetricsSink:
    def __init__(self) -> None:
        self._made: dict[str, Any] = {}

    def _metric(self, metric: Metric) -> Any:
        made = self._made.get(metric.name)
        if made is None:
            if metric.kind is Kind.COUNTER:
                made = ray_metrics.Counter(metric.name, metric.description, tag_keys=metric.tag_keys)
            elif metric.kind is Kind.GAUGE:
                made = ray_metrics.Gauge(metric.name, metric.description, tag_keys=metric.tag_keys)
            else:
                made = ray_metrics.Histogram(
                    metric.name, metric.description, boundaries=list(metric.boundaries), tag_keys=metric.tag_keys
                )
            self._made[metric.name] = made
        return made

    def record(self, metric: Metric, value: float, tags: Mapping[str, str] | None = None) -> None:
        made = self._metric(metric)
        tags = dict(tags) if tags else None
        if metric.kind is Kind.COUNTER:
            made.inc(value, tags)
        elif metric.kind is Kind.GAUGE:
            made.set(value, tags)
        else:
            made.observe(value, tags)


def install() -> None:
    """Idempotent: the first call in a process installs the Ray sink, later ones keep it."""
    if not isinstance(metrics.sink(), RayMetricsSink):
        metrics.install(RayMetricsSink())
