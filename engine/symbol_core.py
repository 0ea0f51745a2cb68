"""The Ray-free core of a symbol shard: who holds which symbol, and each symbol's last trade.

`actors/symbol_shard.py` is its Ray shell; the benchmark's single-process "limit" drives it directly.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection

import msgspec
import numpy as np

from engine.columns import ColumnBatch, PriceColumns, decode_columns, keep_recent
from engine.subscriptions import SymbolRefcounts
from engine.types import PRICE_DECIMALS, LastPrice, msgpack_encoder


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
        keep_recent(self.stats.arrival_lag_ms, (time.time() - batch.ingest_ts) * 1000)
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
