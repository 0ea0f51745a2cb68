"""The Ray-free core of a portfolio shard: its accounts' valuation book and publishing schedule.

`actors/portfolio_shard.py` is its Ray shell; the benchmark's single-process "limit" drives the very
same objects directly. Batches arrive as `engine.columns` blobs; one that does not decode, or a tick
with a bad price, is rejected and counted, never allowed to stop the shard.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable

import msgspec
import numpy as np
import redis.asyncio as aioredis

from engine import metrics, pubsub
from engine.coalescer import Coalescer
from engine.columns import decode_columns, keep_recent
from engine.subscriptions import shard_of
from engine.types import (
    AccountHoldings,
    LastPrice,
    PortfolioSnapshot,
    Tick,
)
from engine.valuation import ValuationBook


class PortfolioStats(msgspec.Struct, kw_only=True):
    batches: int = 0
    bad_frames: int = 0
    published: int = 0  # live snapshots
    refreshed: int = 0  # portfolio:last of unwatched accounts
    live_accounts: int = 0
    live_hz: float = 0.0  # the rate each live account gets now (publish budget shared among them)
    arrival_lag_ms: list[float] = []  # recent (ingest -> arrival here) delays, newest last
    step_ms: list[float] = []  # recent durations of a flush-and-publish step


class PortfolioCore:
    """The accounts of one portfolio shard: their valuation book and publishing schedule."""

    def __init__(
        self,
        index: int,
        shards: int,
        publish_hz: float,
        idle_refresh_s: float,
        price_grace_s: float = 10.0,
        publish_budget: float = float("inf"),
    ) -> None:
        self.index = index
        self.price_grace_s = price_grace_s
        self.started = time.time()
        self.shards = shards
        self.book = ValuationBook()
        self.coalescer = Coalescer(publish_hz, idle_refresh_s, publish_budget)
        self.stats = PortfolioStats()

    def owns(self, account_id: str) -> bool:
        return shard_of(account_id, self.shards) == self.index

    def set_holdings(self, accounts: Iterable[AccountHoldings]) -> None:
        self.book.set_holdings(a for a in accounts if self.owns(a.account_id))

    def replace_accounts(self, requested: Collection[str], found: Iterable[AccountHoldings]) -> None:
        """Reloaded accounts: the found ones replace what was held, the others are gone."""
        found = [a for a in found if self.owns(a.account_id)]
        present = {a.account_id for a in found}
        self.book.remove_accounts(a for a in requested if a not in present and self.owns(a))
        self.book.set_holdings(found)

    def symbols(self) -> set[str]:
        return self.book.held_symbols()

    def on_batch(self, blob: object) -> int:
        """Queue one batch (a ColumnBatch blob); returns how many ticks were accepted."""
        batch = decode_columns(blob)
        if batch is None:
            self.stats.bad_frames += 1
            return 0
        self.stats.batches += 1
        keep_recent(self.stats.arrival_lag_ms, (time.time() - batch.ingest_ts) * 1000)
        accepted = 0
        for c in batch.columns:
            rejected = self.book.apply_columns(
                c.symbols, c.price, c.prev_close, c.ts, c.session, c.source, batch.ingest_ts
            )
            accepted += len(c.symbols) - rejected
        return accepted

    def seed_prices(self, prices: Iterable[LastPrice], market_now: float | None = None) -> None:
        """Last known prices (from Redis) for a shard that starts while a symbol is quiet.

        A price stamped after the market's `market_now` was left by an earlier run of another
        replay epoch: taking it would move the book to its day (dropping today's ticks as stale)
        or make every tick until its moment look late, so it is ignored (the feed prices the
        symbol afresh).
        """
        ticks = [
            Tick(p.symbol, p.last, p.prev_close, p.ts, p.session, p.source)
            for p in prices
            if market_now is None or p.ts <= market_now
        ]
        self.book.apply(ticks, time.time())

    def set_live(self, flags: Collection[bool], now: float) -> None:
        """Interest of every account, in `book.account_ids()` order."""
        ids = self.book.account_ids()
        live = np.array([self.book.index_of(a) for a, f in zip(ids, flags, strict=True) if f], dtype=np.int64)
        self.coalescer.set_live(live, self._size(), now)
        self.stats.live_accounts = len(live)
        self.stats.live_hz = round(1.0 / self.coalescer.min_gap, 2)

    def _size(self) -> int:
        return self.book.slots

    def step(self, now: float) -> tuple[list[PortfolioSnapshot], list[PortfolioSnapshot]]:
        """Apply queued ticks; (snapshots to publish live, snapshots only to store as last)."""
        size = self._size()
        changed = self.book.flush()
        self.coalescer.mark(changed, size, now)
        live, quiet = self.coalescer.due(now, size)
        if now - self.started < self.price_grace_s:
            live, quiet = self._priced(live, size, now), self._priced(quiet, size, now)
        return self.book.snapshots(live, now), self.book.snapshots(quiet, now)

    def _priced(self, indices: np.ndarray, size: int, now: float) -> np.ndarray:
        """Right after a start, hold back accounts whose symbols have no price yet (the first ticks
        are a moment away); after `price_grace_s` they go out as they are (a symbol the feed
        does not know would otherwise keep its holders dark)."""
        blind = self.book.unpriced(indices)
        if blind.any():
            self.coalescer.mark(indices[blind], size, now)
        priced: np.ndarray = indices[~blind]
        return priced


LATENCY_SAMPLE = 16  # snapshots per publish step whose tick-to-publish time goes to the histogram


def _observe_latency(live: list[PortfolioSnapshot]) -> None:
    """A few evenly spaced snapshots of the step, so the cost stays flat however many went out."""
    sink = metrics.sink()
    for snap in live[:: max(1, len(live) // LATENCY_SAMPLE)][:LATENCY_SAMPLE]:
        sink.record(metrics.TICK_TO_PUBLISH_MS, (snap.publish_ts - snap.ingest_ts) * 1000)


async def publish_step(core: PortfolioCore, client: aioredis.Redis) -> int:
    """One flush of a portfolio shard: value, coalesce and write to Redis; returns snapshots written."""
    now = time.time()
    live, quiet = core.step(now)
    if live or quiet:
        stamped = time.time()
        if stamped - now > 0.001:  # building took time: say when it really went out
            live = [msgspec.structs.replace(s, publish_ts=stamped) for s in live]
        await pubsub.publish_snapshots(client, live, quiet)
        core.stats.published += len(live)
        core.stats.refreshed += len(quiet)
        _observe_latency(live)
    keep_recent(core.stats.step_ms, (time.time() - now) * 1000)
    return len(live) + len(quiet)


async def refresh_interest(core: PortfolioCore, client: aioredis.Redis) -> None:
    ids = core.book.account_ids()
    core.set_live(await pubsub.interested(client, ids), time.time())


async def restore_from_redis(core: PortfolioCore, client: aioredis.Redis, market_now: float | None = None) -> None:
    """What a (re)started shard takes from Redis: last prices of its symbols (none stamped after
    `market_now`) and the seq reached."""
    core.seed_prices((await pubsub.read_prices(client, core.symbols())).values(), market_now)
    last = await pubsub.read_last_snapshots(client, core.book.account_ids())
    core.book.restore_seq({a: s.seq for a, s in last.items()})
