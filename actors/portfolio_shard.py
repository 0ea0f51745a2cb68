"""PortfolioShard: the accounts that hash to it, valued on one book and published to Redis.

On (re)start it loads its accounts from the position source, takes the last prices and the seq
reached from Redis, and registers its symbols with the symbol shards (which re-subscribe the feed),
so a restarted shard resumes publishing correct values without anybody replaying anything to it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Collection
from typing import Any

import msgspec
import ray

from actors import metrics as ray_metrics
from actors.common import Outbox, setup_process, shared_redis_url, symbol_shard_name
from engine import metrics, pubsub
from engine.clock import clock_from_settings
from engine.config import Settings
from engine.positions import PositionSource
from engine.realtime import PortfolioCore, publish_step, refresh_interest, restore_from_redis
from engine.subscriptions import shard_of

log = logging.getLogger(__name__)

INTEREST_POLL_S = 1.0  # how soon a new live subscriber starts getting snapshots
# The publish step runs on its own short period, independent of CLERA_FLUSH_MS: it is a local
# vectorised pass (cheap when nothing is due) and a snapshot goes out at the first step after its
# account's gap has passed, so a step period near the gap would stretch every gap. The hops'
# flushes are Ray calls (~0.25 ms of CPU each end to end) and keep CLERA_FLUSH_MS.
STEP_S = 0.01


@ray.remote(num_cpus=0)
class PortfolioShard:
    def __init__(
        self,
        settings: Settings,
        index: int,
        source_factory: Callable[[Settings], PositionSource],
    ) -> None:
        setup_process(settings)
        self.settings = settings
        self._deltas = metrics.Deltas()
        self.index = index
        self.core = PortfolioCore(
            index, settings.portfolio_shards, settings.publish_hz, settings.idle_refresh_s,
            publish_budget=settings.publish_budget,
        )
        self.source = source_factory(settings)
        self.clock = clock_from_settings(settings)
        self.redis = pubsub.connect(shared_redis_url(settings))
        self.symbol_shards = Outbox(symbol_shard_name, settings.ray_namespace)
        self.unknown_symbols: list[str] = []
        self.errors = 0
        self.started_at = time.time()
        self._lock = asyncio.Lock()  # one (re)load at a time, applied in the order they started
        self._ready = asyncio.Event()
        self._registered: set[str] = set()
        loop = asyncio.get_event_loop()
        self._tasks = [loop.create_task(self._start())]

    async def _start(self) -> None:
        while True:
            try:
                await self.reload_all()
                await restore_from_redis(self.core, self.redis, self._market_now())
                await refresh_interest(self.core, self.redis)
                break
            except Exception:
                self.errors += 1
                log.exception("portfolio shard %d could not load its accounts; retrying", self.index)
                await asyncio.sleep(2.0)
        self._ready.set()
        loop = asyncio.get_event_loop()
        self._tasks += [
            loop.create_task(self._publish_loop()), loop.create_task(self._interest_loop()),
            loop.create_task(self._report()),
        ]

    async def _publish_loop(self) -> None:
        period = STEP_S
        while True:
            began = time.monotonic()
            try:
                await publish_step(self.core, self.redis)
            except Exception:
                self.errors += 1
                metrics.sink().record(metrics.REDIS_ERRORS, 1, {"component": "portfolio_shard"})
                log.exception("portfolio shard %d publish failed", self.index)
            await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))

    async def _report(self) -> None:
        """Snapshots written and frames refused as metric increments, once a second."""
        while True:
            await asyncio.sleep(ray_metrics.REPORT_S)
            stats = self.core.stats
            self._deltas.report(metrics.SNAPSHOTS_PUBLISHED, stats.published, {"kind": "live"})
            self._deltas.report(metrics.SNAPSHOTS_PUBLISHED, stats.refreshed, {"kind": "idle"})
            self._deltas.report(metrics.TICKS_REJECTED, stats.bad_frames, {"reason": "bad_frame"})

    async def _interest_loop(self) -> None:
        while True:
            await asyncio.sleep(INTEREST_POLL_S)
            try:
                await refresh_interest(self.core, self.redis)
            except Exception:
                self.errors += 1
                log.exception("portfolio shard %d interest refresh failed", self.index)

    async def _register_symbols(self) -> None:
        """Tell each symbol shard the full set of its symbols this shard holds (when it changed)."""
        held = self.core.symbols()
        if held == self._registered:
            return
        new = held - self._registered
        n = self.settings.symbol_shards
        unknown: list[str] = []
        for dest in range(n):
            mine = sorted(s for s in held if shard_of(s, n) == dest)
            before = {s for s in self._registered if shard_of(s, n) == dest}
            if set(mine) != before:
                unknown += (await self.symbol_shards.call(dest, "set_holder", self.index, mine)) or []
        self._registered = held
        self.unknown_symbols = sorted(unknown)
        if new:
            self.core.seed_prices((await pubsub.read_prices(self.redis, new)).values(), self._market_now())

    def _market_now(self) -> float:
        """The market clock now, in the unit of tick times (replayed market time under replay)."""
        return self.clock.now().timestamp()

    # --- holdings -------------------------------------------------------------------------
    async def reload_all(self) -> None:
        async with self._lock:
            mine = await asyncio.to_thread(self.source.load_all, self.core.owns)
            gone = set(self.core.book.account_ids()) - {a.account_id for a in mine}
            self.core.replace_accounts(gone, mine)
            del mine
            await self._register_symbols()
            # the holdings are long-lived (hundreds of thousands of objects): keep them out of the
            # cyclic collector's full passes, which would otherwise stall publishing for a while
            gc.collect()
            gc.freeze()

    async def reload(self, account_ids: list[str]) -> None:
        """Holdings of these accounts changed (or they appeared or closed): load them again."""
        ids = [a for a in account_ids if self.core.owns(a)]
        if not ids:
            return
        async with self._lock:
            found = await asyncio.to_thread(self.source.load, ids)
            self.core.replace_accounts(ids, found)
            await self._register_symbols()

    # --- prices ---------------------------------------------------------------------------
    async def on_batch(self, blob: bytes) -> None:
        self.core.on_batch(blob)

    async def symbols_for(self, symbol_shard: int) -> list[str]:
        await self._ready.wait()
        n = self.settings.symbol_shards
        return sorted(s for s in self._registered if shard_of(s, n) == symbol_shard)

    # --- queries --------------------------------------------------------------------------
    async def accounts(self) -> list[str]:
        return self.core.book.account_ids()

    async def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "index": self.index,
            "ready": self._ready.is_set(),
            "accounts": self.core.book.account_count,
            "symbols": len(self._registered),
            "unknown_symbols": self.unknown_symbols,
            "errors": self.errors,
            "started_at": self.started_at,
            "pending": self.core.coalescer.pending(self.core.book.slots),
            "book": msgspec.to_builtins(self.core.book.stats),
            "stats": msgspec.to_builtins(self.core.stats),
        }

    async def ready(self) -> bool:
        await self._ready.wait()
        return True


def ids_by_shard(account_ids: Collection[str], shards: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for account_id in account_ids:
        out.setdefault(shard_of(account_id, shards), []).append(account_id)
    return out
