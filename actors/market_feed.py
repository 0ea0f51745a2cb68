"""MarketFeed: the one actor that owns the upstream feed and batches its ticks to the symbol shards."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import ray

from actors import metrics as ray_metrics
from actors.common import Outbox, lookup, setup_process, symbol_shard_name
from engine import metrics
from engine.clock import clock_from_settings
from engine.columns import TickBatcher
from engine.config import Settings
from engine.feeds import Feed, feed_from_settings

log = logging.getLogger(__name__)

FeedFactory = Callable[[Settings], Feed]


def default_feed(settings: Settings) -> Feed:
    return feed_from_settings(settings, clock_from_settings(settings))


class MarketFeedStats(msgspec.Struct, kw_only=True):
    ticks: int = 0
    batches_sent: int = 0
    lag_s: float = 0.0  # how far behind its own timestamps the newest batch arrived (simulated/live)


class MarketFeedCore:
    """Routes feed batches by symbol to the symbol shards, flushed every `flush_ms` or at `batch_max`."""

    def __init__(self, settings: Settings, feed: Feed, outbox: Outbox) -> None:
        self.settings = settings
        self.feed = feed
        self.outbox = outbox
        self.batcher = TickBatcher(settings.symbol_shards, settings.batch_max)
        self.stats = MarketFeedStats()

    async def add(self, ticks: list[Any], ingest_ts: float) -> None:
        self.stats.ticks += len(ticks)
        if self.batcher.add(ticks, ingest_ts):
            await self.flush()

    async def flush(self) -> None:
        sizes = self.batcher.sizes()
        for dest, blob in self.batcher.take().items():
            metrics.sink().record(metrics.BATCH_SIZE, sizes[dest])
            await self.outbox.send(dest, "on_ticks", blob)
            self.stats.batches_sent += 1

    async def pump(self) -> None:
        async for ticks in self.feed.batches():
            now = time.time()
            if ticks:
                self.stats.lag_s = max(0.0, now - max(t.ts for t in ticks)) if self.feed.source != "replay" else 0.0
                await self.add(ticks, now)
            await asyncio.sleep(0)  # a feed catching up never sleeps: let flushes and calls in

    async def flush_forever(self) -> None:
        period = self.settings.flush_ms / 1000
        while True:
            await asyncio.sleep(period)
            await self.flush()


@ray.remote(num_cpus=0)
class MarketFeed:
    def __init__(self, settings: Settings, feed_factory: FeedFactory | None = None) -> None:
        setup_process(settings)
        self.settings = settings
        self._deltas = metrics.Deltas()
        outbox = Outbox(symbol_shard_name, settings.ray_namespace)
        self.core = MarketFeedCore(settings, (feed_factory or default_feed)(settings), outbox)
        loop = asyncio.get_event_loop()
        self._resubscribed = loop.create_task(self._resubscribe())
        self._tasks = [
            loop.create_task(self._guard(self.core.pump)),
            loop.create_task(self._guard(self.core.flush_forever)),
            loop.create_task(self._guard(self._report_forever)),
        ]

    async def _guard(self, run: Callable[[], Awaitable[None]]) -> None:
        """Keep a loop alive through an unexpected error (logged), so the feed never stops silently."""
        while True:
            try:
                await run()
                return
            except Exception:
                log.exception("market feed loop failed; restarting it")
                await asyncio.sleep(1.0)

    async def _report_forever(self) -> None:
        """The feed's running counts as metric increments, once a second (never per tick)."""
        while True:
            await asyncio.sleep(ray_metrics.REPORT_S)
            feed, stats = self.core.feed.status(), self.core.stats
            self._deltas.report(metrics.TICKS_INGESTED, stats.ticks, {"source": feed.source})
            self._deltas.report(metrics.TICKS_REJECTED, feed.rejected, {"reason": "bad_price"})
            self._deltas.report(metrics.FEED_RECONNECTS, feed.reconnects)

    async def _resubscribe(self) -> None:
        """After a restart the feed knows no symbols: take them from the symbol shards' counts."""
        for index in range(self.settings.symbol_shards):
            shard = lookup(symbol_shard_name(index), self.settings.ray_namespace)
            if shard is None:
                continue
            try:
                symbols = await shard.symbols.remote()
            except ray.exceptions.RayError:
                continue
            if symbols:
                await asyncio.to_thread(self.core.feed.subscribe, symbols)

    async def ready(self) -> bool:
        """True once the feed has taken over the symbols the shards already count."""
        await asyncio.shield(self._resubscribed)
        return True

    async def subscribe(self, symbols: list[str]) -> list[str]:
        """Start symbols; returns those the feed cannot serve.

        In a thread: the Alpaca feed fetches previous closes over HTTP while subscribing, which
        must not stall this actor's loop (and with it the tick pump).
        """
        return await asyncio.to_thread(self.core.feed.subscribe, symbols)

    async def unsubscribe(self, symbols: list[str]) -> None:
        await asyncio.to_thread(self.core.feed.unsubscribe, symbols)

    async def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "feed": msgspec.to_builtins(self.core.feed.status()),
            "stats": msgspec.to_builtins(self.core.stats),
            "sent": self.core.outbox.sent,
            "failed": self.core.outbox.failed,
        }
