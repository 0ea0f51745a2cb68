"""The Ray-free cores of the realtime shards: what a symbol shard and a portfolio shard do.

The actors in `actors/` are thin shells around these (they add the Ray calls and timers); the
benchmark's single-process "limit" drives the very same objects directly. Batches travel as msgpack
blobs of `ColumnBatch` (ticks as columns: a shard turns them into numpy arrays without building an
object per tick), conflated per symbol at each symbol shard. A blob that does not decode, or a tick
with a bad price, is rejected and counted, never allowed to stop a shard.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Iterable

import msgspec
import numpy as np
import redis.asyncio as aioredis

from engine import metrics, pubsub
from engine.subscriptions import SymbolRefcounts, shard_of
from engine.types import (
    PRICE_DECIMALS,
    AccountHoldings,
    LastPrice,
    PortfolioSnapshot,
    Tick,
    msgpack_encoder,
)
from engine.valuation import Coalescer, ValuationBook


class PriceColumns(msgspec.Struct, array_like=True, gc=False):
    """Ticks of one session and source as columns: the symbol shard -> portfolio shard format,
    which a portfolio shard turns into numpy arrays without touching each tick in Python."""

    symbols: list[str]
    price: list[float]
    prev_close: list[float]
    ts: list[float]
    session: str
    source: str


class ColumnBatch(msgspec.Struct, array_like=True, gc=False):
    columns: list[PriceColumns]
    ingest_ts: float


_column_batch_decoder = msgspec.msgpack.Decoder(ColumnBatch)


def encode_columns(ticks: list[Tick], ingest_ts: float) -> bytes:
    groups: dict[tuple[str, str], list[Tick]] = {}
    for tick in ticks:
        groups.setdefault((tick.session, tick.source), []).append(tick)
    columns = [
        PriceColumns(
            [t.symbol for t in group], [t.price for t in group], [t.prev_close for t in group],
            [t.ts for t in group], session, source,
        )
        for (session, source), group in groups.items()
    ]
    return msgpack_encoder.encode(ColumnBatch(columns, ingest_ts))


def decode_columns(blob: object) -> ColumnBatch | None:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        return None
    try:
        return _column_batch_decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class TickBatcher:
    """Ticks collected per destination shard, as columns, until a flush (by timer, or when one is full)."""

    def __init__(self, destinations: int, batch_max: int) -> None:
        self.destinations = destinations
        self.batch_max = batch_max
        self._groups: list[list[PriceColumns]] = [[] for _ in range(destinations)]
        self._counts = [0] * destinations
        self._ingest: list[float] = [0.0] * destinations
        self._route: dict[str, int] = {}

    def add(self, ticks: Iterable[Tick], ingest_ts: float) -> bool:
        """Route by symbol; returns True when some destination reached `batch_max`."""
        route, all_groups, counts, n = self._route, self._groups, self._counts, self.destinations
        for tick in ticks:
            dest = route.get(tick.symbol)
            if dest is None:
                dest = route[tick.symbol] = shard_of(tick.symbol, n)
            groups = all_groups[dest]
            if not groups:
                self._ingest[dest] = ingest_ts
            if not groups or groups[-1].session != tick.session or groups[-1].source != tick.source:
                groups.append(PriceColumns([], [], [], [], tick.session, tick.source))
            g = groups[-1]
            g.symbols.append(tick.symbol)
            g.price.append(tick.price)
            g.prev_close.append(tick.prev_close)
            g.ts.append(tick.ts)
            counts[dest] += 1
        return max(counts) >= self.batch_max

    def pending(self) -> int:
        return sum(self._counts)

    def sizes(self) -> list[int]:
        """Ticks waiting per destination (what the next `take` sends each)."""
        return list(self._counts)

    def take(self) -> dict[int, bytes]:
        out = {
            d: msgpack_encoder.encode(ColumnBatch(groups, self._ingest[d]))
            for d, groups in enumerate(self._groups)
            if groups
        }
        self._groups = [[] for _ in range(self.destinations)]
        self._counts = [0] * self.destinations
        return out


class SymbolStats(msgspec.Struct, kw_only=True):
    batches: int = 0
    ticks: int = 0
    bad_frames: int = 0
    rejected: int = 0  # bad prices, or columns of unequal length
    unrouted: int = 0  # symbols no portfolio shard holds (unknown here)
    arrival_lag_ms: list[float] = []  # recent (ingest -> arrival here) delays, newest last


# Pseudo-holder of the symbols kept priced though nobody holds them (`CLERA_PINNED_SYMBOLS`): the
# paper broker fills a first buy at `price:{SYMBOL}`, so that key must exist before anyone holds it.
PINNED = -1


class SymbolCore:
    """Per-symbol subscription state of one symbol shard: refcounts, last trade, previous close.

    Symbols are numbered here once, when a holder first asks for one; a batch is looked up in one
    pass (a dict lookup per tick, in C) and everything after that (validation, conflation, the split
    per holder, the last prices) is numpy over those numbers: no Python object per tick.
    """

    def __init__(self) -> None:
        self.refcounts = SymbolRefcounts()
        self.stats = SymbolStats()
        self._ids: dict[str, int] = {}
        self._names = np.empty(0, dtype=object)
        self._price = np.empty(0)
        self._prev = np.empty(0)
        self._ts = np.empty(0)
        self._tag = np.empty(0, dtype=np.int64)  # index of the (session, source) of the last price
        self._tags: list[tuple[str, str]] = []
        self._unwritten = np.empty(0, dtype=bool)
        self._held: dict[int, np.ndarray] = {}  # holder -> which symbol numbers it holds
        self._held_any = np.empty(0, dtype=bool)

    def set_holder(self, holder: int, symbols: Collection[str]) -> tuple[list[str], list[str]]:
        started, stopped = self.refcounts.set_holder(holder, symbols)
        for symbol in symbols:
            self._number(symbol)
        self._held = {}
        for h, held in self.refcounts.by_holder().items():
            mask = np.zeros(len(self._names), dtype=bool)
            mask[[self._ids[s] for s in held]] = True
            self._held[h] = mask
        self._held_any = (
            np.logical_or.reduce(list(self._held.values())) if self._held else np.zeros(len(self._names), dtype=bool)
        )
        return started, stopped

    def _number(self, symbol: str) -> int:
        index = self._ids.get(symbol)
        if index is None:
            index = self._ids[symbol] = len(self._names)
            self._names = np.append(self._names, np.array([symbol], dtype=object))
            self._price = np.append(self._price, np.nan)
            self._prev = np.append(self._prev, np.nan)
            self._ts = np.append(self._ts, -np.inf)
            self._tag = np.append(self._tag, 0)
            self._unwritten = np.append(self._unwritten, False)
        return index

    def _tag_of(self, session: str, source: str) -> int:
        key = (session, source)
        try:
            return self._tags.index(key)
        except ValueError:
            self._tags.append(key)
            return len(self._tags) - 1

    def route(self, blob: object) -> dict[int, bytes]:
        """One incoming batch -> one outgoing batch per portfolio shard that holds any of its symbols.

        Ticks are conflated per symbol within the batch (the latest wins), so a busy symbol costs
        its holders one update per hop, however many trades it printed.
        """
        batch = decode_columns(blob)
        if batch is None:
            self.stats.bad_frames += 1
            return {}
        self.stats.batches += 1
        _keep(self.stats.arrival_lag_ms, (time.time() - batch.ingest_ts) * 1000)
        out: dict[int, list[PriceColumns]] = {}
        for col in batch.columns:
            for holder, part in self._route_columns(col).items():
                out.setdefault(holder, []).append(part)
        return {holder: msgpack_encoder.encode(ColumnBatch(parts, batch.ingest_ts)) for holder, parts in out.items()}

    def _route_columns(self, col: PriceColumns) -> dict[int, PriceColumns]:
        n = len(col.symbols)
        if not len(col.price) == len(col.prev_close) == len(col.ts) == n:
            self.stats.rejected += max(n, len(col.price))
            return {}
        # a price enters the engine as the market quotes it: a replayed split-adjusted close or a
        # simulated path has 14 decimals, which would otherwise reach the wire (positions, price:{SYMBOL})
        price = np.round(np.asarray(col.price, dtype=float), PRICE_DECIMALS)
        prev = np.round(np.asarray(col.prev_close, dtype=float), PRICE_DECIMALS)
        ts = np.asarray(col.ts, dtype=float)
        ids = np.fromiter(map(self._ids.get, col.symbols, itertools.repeat(-1)), dtype=np.int64, count=n)
        valid = np.isfinite(price) & (price > 0) & np.isfinite(prev) & (prev > 0)
        bad = n - int(valid.sum())
        if bad:
            self.stats.rejected += bad
        known = valid & (ids >= 0)
        known[known] = self._held_any[ids[known]]
        self.stats.unrouted += int(valid.sum()) - int(known.sum())
        keep = np.flatnonzero(known)
        ids = ids[keep]
        # the last tick of each symbol in the batch wins
        _, last_of = np.unique(ids[::-1], return_index=True)
        if len(last_of) < len(ids):
            latest = np.sort(len(ids) - 1 - last_of)
            keep, ids = keep[latest], ids[latest]
        price, prev, ts = price[keep], prev[keep], ts[keep]
        self.stats.ticks += len(ids)
        out: dict[int, PriceColumns] = {}
        for holder, held in self._held.items():
            if holder == PINNED:
                continue  # priced, but no portfolio shard waits for it
            mask = held[ids]
            if mask.any():
                out[holder] = PriceColumns(
                    self._names[ids[mask]].tolist(), price[mask].tolist(), prev[mask].tolist(), ts[mask].tolist(),
                    col.session, col.source,
                )
        # batches may run out of order (an async actor's calls do): an older tick never replaces
        # the last one in `price:{SYMBOL}`
        newer = ts >= self._ts[ids]
        fresh = ids[newer]
        self._price[fresh], self._prev[fresh], self._ts[fresh] = price[newer], prev[newer], ts[newer]
        self._tag[fresh] = self._tag_of(col.session, col.source)
        self._unwritten[fresh] = True
        return out

    def take_prices(self) -> list[LastPrice]:
        """Prices changed since the last call, for one batched write of `price:{SYMBOL}`."""
        changed = np.flatnonzero(self._unwritten)
        self._unwritten[changed] = False
        tags = self._tags
        return [
            LastPrice(name, price, prev, ts, *tags[tag])
            for name, price, prev, ts, tag in zip(
                self._names[changed].tolist(), self._price[changed].tolist(), self._prev[changed].tolist(),
                self._ts[changed].tolist(), self._tag[changed].tolist(), strict=True,
            )
        ]


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
        _keep(self.stats.arrival_lag_ms, (time.time() - batch.ingest_ts) * 1000)
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


def _keep(window: list[float], value: float, size: int = 512) -> None:
    window.append(round(value, 2))
    if len(window) > size:
        del window[: len(window) - size]


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
    _keep(core.stats.step_ms, (time.time() - now) * 1000)
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
