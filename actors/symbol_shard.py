"""SymbolShard: per-symbol subscription state for the symbols that hash to it.

Counts, per symbol, the portfolio shards holding it; tells the MarketFeed to start or stop a symbol
when its count crosses zero; forwards each incoming batch as one batch per portfolio shard that
needs any of its symbols; writes `price:{SYMBOL}` to Redis in batches.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import msgspec
import ray
import redis

from actors import metrics as ray_metrics
from actors.common import Outbox, lookup, market_feed_name, portfolio_shard_name, setup_process, shared_redis_url
from engine import metrics, pubsub
from engine.config import Settings
from engine.subscriptions import shard_of
from engine.symbol_core import PINNED, SymbolCore

log = logging.getLogger(__name__)

# `price:{SYMBOL}` serves Ray-free readers (paper fills, agent tools, /api/company), not the live
# path: two conflated writes a second keep it as fresh as a quote a person reads. At 50k ticks/s every
# symbol changes within 100 ms, so ten writes a second cost a Redis write per symbol every 100 ms:
# about a sixth of a symbol shard's CPU in the realtime benchmark's profile.
PRICE_WRITE_S = 0.5


@ray.remote(num_cpus=0)
class SymbolShard:
    def __init__(self, settings: Settings, index: int) -> None:
        setup_process(settings)
        self.settings = settings
        self._deltas = metrics.Deltas()
        self.index = index
        self.core = SymbolCore()
        self.redis = pubsub.connect(shared_redis_url(settings))
        self.portfolios = Outbox(portfolio_shard_name, settings.ray_namespace)
        self.unknown: set[str] = set()
        self._lock = asyncio.Lock()
        loop = asyncio.get_event_loop()
        self._tasks = [
            loop.create_task(self._write_prices()), loop.create_task(self._recover()), loop.create_task(self._report())
        ]

    def _feed(self) -> ray.actor.ActorHandle[Any] | None:
        return lookup(market_feed_name(), self.settings.ray_namespace)

    async def _recover(self) -> None:
        """A (re)started shard pins its share of the pinned symbols and asks the portfolio shards
        which of its symbols they hold."""
        n = self.settings.symbol_shards
        pinned = [s for s in self.settings.pinned_symbol_list if shard_of(s, n) == self.index]
        if pinned:
            await self.set_holder(PINNED, pinned)

        async def one(holder: int) -> None:
            symbols = await self.portfolios.call(holder, "symbols_for", self.index)
            if symbols:
                await self.set_holder(holder, symbols)

        await asyncio.gather(*(one(h) for h in range(self.settings.portfolio_shards)))

    async def set_holder(self, holder: int, symbols: list[str]) -> list[str]:
        """Replace the symbols portfolio shard `holder` needs; returns those the feed cannot serve."""
        async with self._lock:
            started, stopped = self.core.set_holder(holder, symbols)
            feed = self._feed()
            if feed is None:
                return []
            try:
                if stopped:
                    await feed.unsubscribe.remote(stopped)
                    self.unknown.difference_update(stopped)
                if started:
                    self.unknown.update(await feed.subscribe.remote(started))
            except ray.exceptions.RayError as exc:
                log.warning("market feed unavailable for (un)subscribe: %s", exc)  # it resubscribes on restart
            return sorted(self.unknown & set(symbols))

    async def on_ticks(self, blob: bytes) -> None:
        for holder, out in self.core.route(blob).items():
            await self.portfolios.send(holder, "on_batch", out)

    async def _write_prices(self) -> None:
        period = max(self.settings.flush_ms / 1000, PRICE_WRITE_S)
        while True:
            await asyncio.sleep(period)
            prices = self.core.take_prices()
            if prices:
                try:
                    await pubsub.write_prices(self.redis, prices)
                except (OSError, redis.RedisError) as exc:
                    metrics.sink().record(metrics.REDIS_ERRORS, 1, {"component": "symbol_shard"})
                    log.warning("price write failed: %s", exc)

    async def _report(self) -> None:
        """Refused ticks as metric increments, once a second (never per tick)."""
        while True:
            await asyncio.sleep(ray_metrics.REPORT_S)
            stats = self.core.stats
            self._deltas.report(metrics.TICKS_REJECTED, stats.bad_frames, {"reason": "bad_frame"})
            self._deltas.report(metrics.TICKS_REJECTED, stats.rejected, {"reason": "bad_price"})
            self._deltas.report(metrics.TICKS_REJECTED, stats.unrouted, {"reason": "unrouted"})

    async def symbols(self) -> list[str]:
        return self.core.refcounts.symbols()

    async def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "index": self.index,
            "symbols": len(self.core.refcounts.symbols()),
            "unknown": sorted(self.unknown),
            "stats": msgspec.to_builtins(self.core.stats),
            "sent": self.portfolios.sent,
            "failed": self.portfolios.failed,
        }
