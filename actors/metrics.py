"""The engine's metrics port on `ray.util.metrics`: what every Ray process of the system installs.

Ray's metrics agent on each node serves them on the node's Prometheus endpoint (the metrics export
port) and the dashboard's Metrics view charts them; Ray prefixes the names with `ray_`. Ray drops a
gauge series not set again within two report intervals (a dead worker's values age out), so this
sink sets every gauge's last value again every few seconds: an open socket count that does not
change stays visible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from ray.util import metrics as ray_metrics

from engine import metrics
from engine.metrics import Kind, Metric

REPORT_S = 1.0  # how often an actor turns its running counts into metric increments
GAUGE_REFRESH_S = 5.0  # under Ray's shortest gauge lifetime (two report intervals, at least 2 s each)


class RayMetricsSink:
    def __init__(self) -> None:
        self._made: dict[str, Any] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        self._refresher: threading.Thread | None = None

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
            with self._lock:
                self._gauges[(metric.name, tuple(sorted((tags or {}).items())))] = value
                if self._refresher is None:
                    self._refresher = threading.Thread(target=self._refresh_forever, name="gauges", daemon=True)
                    self._refresher.start()
        else:
            made.observe(value, tags)

    def _refresh_forever(self) -> None:
        while True:
            time.sleep(GAUGE_REFRESH_S)
            with self._lock:
                last = list(self._gauges.items())
            for (name, tags), value in last:
                self._made[name].set(value, dict(tags) or None)


def install() -> None:
    """Idempotent: the first call in a process installs the Ray sink, later ones keep it."""
    if not isinstance(metrics.sink(), RayMetricsSink):
        metrics.install(RayMetricsSink())
