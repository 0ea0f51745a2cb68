"""The engine's metrics port: what the system counts, and a sink to record it in.

Ray-free code (gateway, brokerage, agents, the realtime cores) records through `sink()`; the
default does nothing, so tests and benchmarks without Ray pay nothing. The Ray processes install a
`ray.util.metrics` sink at start (`actors/metrics.py`), which exports to Ray's Prometheus endpoint
and the dashboard. Callers record per batch or per request, never per tick: a hot loop keeps its own
counters and reports their growth on a timer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol

import msgspec


class Kind(enum.Enum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"


class Metric(msgspec.Struct, frozen=True):
    """One metric's declaration; a sink creates it once, on first use, from this."""

    name: str
    kind: Kind
    description: str
    tag_keys: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


LATENCY_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0)
SIZES = (1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0)

TICKS_INGESTED = Metric("clera_ticks_ingested", Kind.COUNTER, "Ticks the market feed took in.", ("source",))
TICKS_REJECTED = Metric(
    "clera_ticks_rejected", Kind.COUNTER,
    "Ticks or frames refused (bad_frame, bad_price, unrouted: nobody holds the symbol).", ("reason",),
)
BATCH_SIZE = Metric("clera_batch_size", Kind.HISTOGRAM, "Ticks per batch the feed sends to a symbol shard.", (), SIZES)
TICK_TO_PUBLISH_MS = Metric(
    "clera_tick_to_publish_ms", Kind.HISTOGRAM,
    "Feed ingest of the newest tick to the snapshot's publish, ms (a sample of each publish step).", (), LATENCY_MS,
)
SNAPSHOTS_PUBLISHED = Metric(
    "clera_snapshots_published", Kind.COUNTER, "Snapshots written: live (published) or idle (stored only).", ("kind",)
)
OPEN_WEBSOCKETS = Metric("clera_open_websockets", Kind.GAUGE, "Portfolio WebSockets open on this gateway replica.")
REDIS_ERRORS = Metric(
    "clera_redis_errors", Kind.COUNTER, "Failed Redis operations, by the component that saw them.", ("component",)
)
FEED_RECONNECTS = Metric("clera_feed_reconnects", Kind.COUNTER, "Reconnections of the upstream market-data stream.")
CHAT_TURNS = Metric(
    "clera_chat_turns", Kind.COUNTER, "Chat turns answered, by route and outcome.", ("route", "outcome")
)
CHAT_LATENCY_MS = Metric("clera_chat_turn_ms", Kind.HISTOGRAM, "Duration of a chat turn, ms.", ("route",), LATENCY_MS)
ORDERS = Metric(
    "clera_orders", Kind.COUNTER, "Orders placed or rejected, by path and reason.", ("outcome", "path", "reason")
)
CLOSURES = Metric(
    "clera_closures", Kind.GAUGE, "Unfinished account closures the orchestrator drives, by step.", ("step",)
)

ALL: tuple[Metric, ...] = (
    TICKS_INGESTED, TICKS_REJECTED, BATCH_SIZE, TICK_TO_PUBLISH_MS, SNAPSHOTS_PUBLISHED, OPEN_WEBSOCKETS,
    REDIS_ERRORS, FEED_RECONNECTS, CHAT_TURNS, CHAT_LATENCY_MS, ORDERS, CLOSURES,
)


class MetricsSink(Protocol):
    def record(self, metric: Metric, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Counter: add `value`; histogram: observe it; gauge: set it."""


class NullSink:
    def record(self, metric: Metric, value: float, tags: Mapping[str, str] | None = None) -> None:
        return None


_sink: MetricsSink = NullSink()


def install(sink: MetricsSink) -> None:
    """Make `sink` the process's sink (a Ray actor or replica does so when it starts)."""
    global _sink
    _sink = sink


def sink() -> MetricsSink:
    return _sink


class Deltas:
    """Turns a running total kept by a hot loop into counter increments reported on a timer."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def report(self, metric: Metric, total: float, tags: Mapping[str, str] | None = None) -> None:
        key = (metric.name, tuple(sorted((tags or {}).items())))
        grown = total - self._seen.get(key, 0.0)
        self._seen[key] = total
        if grown > 0:
            _sink.record(metric, grown, tags)
