"""The valuation book: many accounts valued at once from price ticks.

Holdings are kept as flat position arrays (one row per account x symbol), ordered by account (to
value and build snapshots), with the accounts of each symbol's holders also kept in symbol order (so
a price change touches only that symbol's holders). Ticks are conflated per symbol until `flush()`
(latest wins); a flush sets the new prices and marks the holders' accounts changed. Values are
computed exactly from the positions and the current prices when a snapshot is built, never carried
forward by deltas: under a busy feed every account changes between two of its snapshots, so
keeping running values per tick would be work thrown away. The arrays are rebuilt lazily, only when
holdings change or the day rolls.

Day change of a position is `qty * last - start_qty * prev_close - net_cost_today` (see
`engine.types.Position`), so shares bought today count from their cost; cash, and cash deposited
today, never count as a gain. A tick of a later session rolls the day for holdings loaded for an
earlier one: what is held becomes the day's starting quantity and nothing was bought today yet.

No I/O here: the shard actors, the benchmark's single-process limit and the tests all drive it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np

from engine.arrays import grown, ranges
from engine.types import AccountHoldings, PortfolioSnapshot, PositionValue, Tick

_SYM, _QTY, _START, _COST, _ENTRY = range(5)  # rows of an account's position table


_TWO = itertools.repeat(2)
_FOUR = itertools.repeat(4)


def _cents(values: np.ndarray) -> Iterator[float]:
    """Python's own rounding to the cent (correctly rounded, as every total has always been)."""
    return map(round, values.tolist(), _TWO)


class BookStats(msgspec.Struct, kw_only=True):
    ticks: int = 0
    rejected: int = 0  # NaN/infinite/non-positive prices or previous closes
    stale: int = 0  # ticks of a session older than the book's
    late: int = 0  # ticks older than the symbol's last one (batches executed out of order, an old seed)
    flushes: int = 0
    holder_updates: int = 0
    rebuilds: int = 0
    snapshots: int = 0


class ValuationBook:
    """Values every account it holds; `flush()` says which accounts changed since the last one."""

    def __init__(self) -> None:
        self.session = ""
        self.newest_ts = 0.0  # event time of the newest tick applied (what a cash-only value is "as of")
        self.newest_ingest = 0.0
        self.source = ""
        self.stats = BookStats()
        # symbols
        self._sym_index: dict[str, int] = {}
        self._sym_names: list[str] = []
        self._sym_name_array = np.empty(0, dtype=object)  # `_sym_names` for fancy indexing, kept in step
        self._last = np.empty(0)
        self._prev = np.empty(0)
        self._sym_ts = np.empty(0)
        self._sym_ingest = np.empty(0)
        # accounts
        self._acct_index: dict[str, int] = {}
        self._acct_ids: list[str] = []
        self._holdings: list[AccountHoldings | None] = []
        # each account's positions as one (5, n) array (symbol index, qty, start qty, net cost today,
        # entry price), converted from Decimal once when its holdings are set: a rebuild concatenates
        self._rows: list[np.ndarray | None] = []
        self._cash = np.empty(0)
        self._seq = np.empty(0, dtype=np.int64)
        self._changed = np.empty(0, dtype=bool)
        # positions, rebuilt lazily
        self._dirty = True
        self._pending: list[tuple[Any, ...]] = []  # (session, source, symbol indices, price, prev, ts, ingest_ts)
        self._pos_acct = np.empty(0, dtype=np.int64)
        self._pos_sym = np.empty(0, dtype=np.int64)
        self._pos_qty = np.empty(0)
        self._pos_start = np.empty(0)
        self._pos_cost = np.empty(0)
        self._pos_entry = np.empty(0)
        self._acct_ptr = np.zeros(1, dtype=np.int64)
        self._sym_acct = np.empty(0, dtype=np.int64)  # the account of each row, rows in symbol order
        self._sym_ptr = np.zeros(1, dtype=np.int64)

    # --- accounts -------------------------------------------------------------------------
    @property
    def account_count(self) -> int:
        return len(self._acct_index)

    @property
    def slots(self) -> int:
        """Account indices in use so far (removed accounts keep theirs)."""
        return len(self._acct_ids)

    def account_ids(self) -> list[str]:
        return list(self._acct_index)

    def index_of(self, account_id: str) -> int | None:
        return self._acct_index.get(account_id)

    def ids_of(self, indices: Iterable[int]) -> list[str]:
        return [self._acct_ids[i] for i in indices]

    def holdings(self, account_id: str) -> AccountHoldings | None:
        index = self._acct_index.get(account_id)
        return None if index is None else self._holdings[index]

    def held_symbols(self) -> set[str]:
        return {p.symbol for h in self._holdings if h is not None for p in h.positions}

    def set_holdings(self, accounts: Iterable[AccountHoldings]) -> None:
        """Add or replace accounts; each is marked changed (its next snapshot reflects it)."""
        for holdings in accounts:
            index = self._acct_index.get(holdings.account_id)
            if index is None:
                index = len(self._acct_ids)
                self._acct_index[holdings.account_id] = index
                self._acct_ids.append(holdings.account_id)
                self._holdings.append(None)
                self._rows.append(None)
                self._grow_accounts(index + 1)
            if self.session and holdings.session < self.session:
                holdings = _rolled(holdings, self.session)
            self._holdings[index] = holdings
            self._rows[index] = self._rows_of(holdings)
            self._cash[index] = float(holdings.cash)
            self._changed[index] = True
        self._dirty = True

    def _rows_of(self, holdings: AccountHoldings) -> np.ndarray:
        return np.array(
            [
                (self._symbol(p.symbol), p.qty, p.start_qty, p.net_cost_today, p.avg_entry_price)
                for p in holdings.positions
            ],
            dtype=float,
        ).reshape(-1, 5).T

    def remove_accounts(self, account_ids: Iterable[str]) -> None:
        for account_id in account_ids:
            index = self._acct_index.pop(account_id, None)
            if index is not None:
                self._holdings[index] = None
                self._rows[index] = None
                self._cash[index] = 0.0
                self._changed[index] = False
                self._dirty = True

    def restore_seq(self, seqs: dict[str, int]) -> None:
        """Continue each account's `seq` after what was already published (a restarted shard)."""
        for account_id, seq in seqs.items():
            index = self._acct_index.get(account_id)
            if index is not None:
                self._seq[index] = max(int(self._seq[index]), seq)

    def _grow_accounts(self, size: int) -> None:
        self._cash = grown(self._cash, size, 0.0)
        self._seq = grown(self._seq, size, 0)
        self._changed = grown(self._changed, size, False)

    def _symbol_names(self) -> np.ndarray:
        if len(self._sym_name_array) != len(self._sym_names):
            self._sym_name_array = np.array(self._sym_names, dtype=object)
        return self._sym_name_array

    def _symbol(self, symbol: str) -> int:
        index = self._sym_index.get(symbol)
        if index is None:
            index = len(self._sym_names)
            self._sym_index[symbol] = index
            self._sym_names.append(symbol)
            size = index + 1
            self._last = grown(self._last, size, np.nan)
            self._prev = grown(self._prev, size, np.nan)
            self._sym_ts = grown(self._sym_ts, size, 0.0)
            self._sym_ingest = grown(self._sym_ingest, size, 0.0)
        return index

    # --- prices ---------------------------------------------------------------------------
    def apply(self, ticks: Iterable[Tick], ingest_ts: float) -> int:
        """Queue ticks until the next flush (latest per symbol wins); returns how many were rejected."""
        by_session: dict[tuple[str, str], list[Tick]] = {}
        for tick in ticks:
            by_session.setdefault((tick.session, tick.source), []).append(tick)
        rejected = 0
        for (session, source), group in by_session.items():
            rejected += self.apply_columns(
                [t.symbol for t in group],
                [t.price for t in group],
                [t.prev_close for t in group],
                [t.ts for t in group],
                session,
                source,
                ingest_ts,
            )
        return rejected

    def apply_columns(
        self,
        symbols: list[str],
        price: list[float],
        prev_close: list[float],
        ts: list[float],
        session: str,
        source: str,
        ingest_ts: float,
    ) -> int:
        """`apply` for ticks of one session already in columns (the shards' wire format): no
        per-tick Python beyond looking up each symbol's index."""
        n = len(symbols)
        if not len(price) == len(prev_close) == len(ts) == n:  # a malformed batch: reject it whole
            n = max(n, len(price))
            self.stats.rejected += n
            return n
        if n == 0:
            return 0
        if session < self.session:
            self.stats.stale += n
            return 0
        index = self._sym_index
        syms = np.fromiter(map(index.get, symbols, itertools.repeat(-1)), dtype=np.int64, count=n)
        if (syms < 0).any():
            for k in np.flatnonzero(syms < 0).tolist():
                syms[k] = self._symbol(symbols[k])
        p = np.asarray(price, dtype=float)
        c = np.asarray(prev_close, dtype=float)
        valid = np.isfinite(p) & (p > 0) & np.isfinite(c) & (c > 0)
        good = int(valid.sum())
        if good < n:
            syms, p, c, t = syms[valid], p[valid], c[valid], np.asarray(ts, dtype=float)[valid]
        else:
            t = np.asarray(ts, dtype=float)
        if good:
            self._pending.append((session, source, syms, p, c, t, ingest_ts))
        self.stats.ticks += good
        self.stats.rejected += n - good
        return n - good

    def last_price(self, symbol: str) -> tuple[float, float] | None:
        index = self._sym_index.get(symbol)
        if index is None or not math.isfinite(self._last[index]):
            return None
        return float(self._last[index]), float(self._prev[index])

    @staticmethod
    def _conflate(chunks: list[tuple[Any, ...]]) -> tuple[np.ndarray, ...]:
        """Queued chunks -> one entry per symbol (symbol, price, prev, ts, ingest): the newest by
        event time, the last queued among equals. Arrival order is not event order: Ray runs an
        async actor's calls in any order, and a price seeded from Redis may be older than a tick."""
        syms = np.concatenate([c[2] for c in chunks])
        price = np.concatenate([c[3] for c in chunks])
        prev = np.concatenate([c[4] for c in chunks])
        ts = np.concatenate([c[5] for c in chunks])
        ingest = np.concatenate([np.full(len(c[2]), c[6]) for c in chunks])
        if len(chunks) > 1 or len(np.unique(syms)) < len(syms):
            order = np.lexsort((np.arange(len(syms)), ts, syms))  # by symbol, then time, then arrival
            ordered = syms[order]
            keep = order[np.append(ordered[1:] != ordered[:-1], True)]  # the last of each symbol's run
            syms, price, prev, ts, ingest = syms[keep], price[keep], prev[keep], ts[keep], ingest[keep]
        return syms, price, prev, ts, ingest

    def flush(self) -> np.ndarray:
        """Apply queued ticks; returns the accounts whose value or holdings changed since the last flush."""
        chunks, self._pending = self._pending, []
        chunks = [c for c in chunks if c[0] >= self.session]  # queued before a roll: stale now
        if chunks:
            newest = max(c[0] for c in chunks)
            if newest > self.session:
                older = [c for c in chunks if c[0] < newest]
                if older:
                    self._set_prices(*self._newest(older))
                self._roll(newest)
                chunks = [c for c in chunks if c[0] == newest]
            self.source = chunks[-1][1]
        self.stats.flushes += 1
        syms = np.empty(0, dtype=np.int64)
        if chunks:
            syms, price, prev, ts, ingest = self._newest(chunks)
        if self._dirty:
            self._rebuild()
        if len(syms):
            self._set_prices(syms, price, prev, ts, ingest)
            rows = self._holders(syms)
            if len(rows):
                self._changed[self._sym_acct[rows]] = True
                self.stats.holder_updates += len(rows)
        changed = np.flatnonzero(self._changed[: len(self._acct_ids)])
        self._changed[changed] = False
        return changed

    def _newest(self, chunks: list[tuple[Any, ...]]) -> tuple[np.ndarray, ...]:
        """`_conflate`, less the symbols whose tick is older than the last one applied (it never replaces it)."""
        syms, price, prev, ts, ingest = self._conflate(chunks)
        current = ts >= self._sym_ts[syms]
        if current.all():
            return syms, price, prev, ts, ingest
        self.stats.late += int(len(current) - current.sum())
        return syms[current], price[current], prev[current], ts[current], ingest[current]

    def _set_prices(
        self, syms: np.ndarray, price: np.ndarray, prev: np.ndarray, ts: np.ndarray, ingest: np.ndarray
    ) -> None:
        if len(ts):
            self.newest_ts = max(self.newest_ts, float(ts.max()))
            self.newest_ingest = max(self.newest_ingest, float(ingest.max()))
        self._last[syms] = price
        self._prev[syms] = prev
        self._sym_ts[syms] = ts
        self._sym_ingest[syms] = ingest

    def _holders(self, syms: np.ndarray) -> np.ndarray:
        """The rows (in symbol order) of the holders of `syms`."""
        kept = syms[syms < len(self._sym_ptr) - 1]
        starts = self._sym_ptr[kept]
        return ranges(starts, self._sym_ptr[kept + 1] - starts)

    def _roll(self, session: str) -> None:
        """A new trading day: the last trade of each symbol is its previous close until the feed
        says otherwise, and holdings loaded for an earlier day start this one with what they hold."""
        self.session = session
        known = np.isfinite(self._last)
        self._prev[known] = self._last[known]
        self._dirty = True
        for index, holdings in enumerate(self._holdings):
            if holdings is not None and holdings.session < session:
                self._holdings[index] = _rolled(holdings, session)
                held = self._rows[index]
                assert held is not None  # rows are kept with their holdings
                rows = held.copy()
                rows[_START], rows[_COST] = rows[_QTY], 0.0
                self._rows[index] = rows
                self._changed[index] = True

    def _rebuild(self) -> None:
        held = [(index, rows) for index, rows in enumerate(self._rows) if rows is not None]
        n_acct, n_sym = len(self._acct_ids), len(self._sym_names)
        counts = np.fromiter((rows.shape[1] for _, rows in held), dtype=np.int64, count=len(held))
        self._pos_acct = np.repeat(np.fromiter((i for i, _ in held), dtype=np.int64, count=len(held)), counts)
        table = np.concatenate([rows for _, rows in held], axis=1) if held else np.empty((5, 0))
        self._pos_sym = table[_SYM].astype(np.int64)
        self._pos_qty, self._pos_start, self._pos_cost, self._pos_entry = (
            np.ascontiguousarray(table[k]) for k in (_QTY, _START, _COST, _ENTRY)
        )
        self._acct_ptr = np.concatenate(([0], np.cumsum(np.bincount(self._pos_acct, minlength=n_acct))))
        # a stable sort of 16-bit keys is a radix sort: ten times faster than of int64 ones
        keys = self._pos_sym.astype(np.uint16) if n_sym <= 1 << 16 else self._pos_sym
        # the holders' accounts in symbol order: a flush reads runs of neighbouring rows
        self._sym_acct = self._pos_acct[np.argsort(keys, kind="stable")]
        self._sym_ptr = np.concatenate(([0], np.cumsum(np.bincount(self._pos_sym, minlength=n_sym))))
        self._dirty = False
        self.stats.rebuilds += 1

    def _effective_prices(self, rows: np.ndarray, syms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Last and previous close per position row (`syms` its symbols); before a symbol's first
        tick, its entry price.

        A position without any price yet is shown at what it cost, with no day change, rather than
        at zero or at an invented move.
        """
        last = self._last[syms]
        prev = self._prev[syms]
        unknown = ~np.isfinite(last)
        if unknown.any():
            last = np.where(unknown, self._pos_entry[rows], last)
            prev = np.where(unknown, self._pos_entry[rows], prev)
        return last, prev

    @staticmethod
    def _newest_of(times: np.ndarray, ends: np.ndarray, counts: np.ndarray, default: float) -> np.ndarray:
        """Per account, the newest of its positions' symbol `times` (rows concatenated, each account's
        ending at `ends`); `default` for an account without positions. Taken when a snapshot is
        built, from the symbols it holds now, rather than kept per account on every tick."""
        out = np.full(len(counts), default)
        held = counts > 0
        if held.any():
            out[held] = np.maximum.reduceat(times, (ends - counts)[held])
        return out

    def unpriced(self, indices: np.ndarray) -> np.ndarray:
        """Which of these accounts hold a symbol with neither a price nor an entry price yet
        (a snapshot of them now would show that position at zero)."""
        if self._dirty:
            self._rebuild()
        indices = np.asarray(indices, dtype=np.int64)
        if not len(indices):
            return np.zeros(0, dtype=bool)
        starts = self._acct_ptr[indices]
        counts = self._acct_ptr[indices + 1] - starts
        rows = ranges(starts, counts)
        blind = ~np.isfinite(self._last[self._pos_sym[rows]]) & (self._pos_entry[rows] <= 0)
        segment = np.repeat(np.arange(len(indices)), counts)
        return np.bincount(segment, blind, minlength=len(indices)) > 0

    # --- values ---------------------------------------------------------------------------
    def totals(self) -> dict[str, tuple[float, float]]:
        """(total value, day change) of every account, unrounded."""
        if self._dirty:
            self._rebuild()
        last, prev = self._effective_prices(np.arange(len(self._pos_acct)), self._pos_sym)
        size = len(self._cash)
        value = np.bincount(self._pos_acct, self._pos_qty * last, minlength=size)
        base = np.bincount(self._pos_acct, self._pos_start * prev + self._pos_cost, minlength=size)
        return {
            account_id: (float(self._cash[i] + value[i]), float(value[i] - base[i]))
            for account_id, i in self._acct_index.items()
        }

    def snapshots(self, indices: np.ndarray, publish_ts: float) -> list[PortfolioSnapshot]:
        """Snapshots of these accounts (each gets its next seq), values exact from the positions."""
        if self._dirty:
            self._rebuild()
        indices = np.asarray(indices, dtype=np.int64)
        indices = indices[[self._holdings[i] is not None for i in indices]] if len(indices) else indices
        if not len(indices):
            return []
        starts = self._acct_ptr[indices]
        counts = self._acct_ptr[indices + 1] - starts
        rows = ranges(starts, counts)
        syms = self._pos_sym[rows]
        last, prev = self._effective_prices(rows, syms)
        qty = self._pos_qty[rows]
        value = qty * last
        change = value - self._pos_start[rows] * prev - self._pos_cost[rows]
        base = value - change
        pct = np.divide(change * 100.0, base, out=np.zeros_like(change), where=base != 0)
        names = self._symbol_names()[syms].tolist()
        cols = zip(
            names, qty.tolist(), last.tolist(), prev.tolist(),
            np.round(value, 2).tolist(), np.round(change, 2).tolist(), np.round(pct, 4).tolist(), strict=True,
        )
        per_position = list(itertools.starmap(PositionValue, cols))
        segment = np.repeat(np.arange(len(indices)), counts)
        value_sums = np.bincount(segment, value, minlength=len(indices))
        change_sums = np.bincount(segment, change, minlength=len(indices))
        self._seq[indices] += 1
        # the totals as whole columns: one pass of C per field instead of a dozen Python calls per account
        cash = self._cash[indices]
        total = cash + value_sums
        day_base = total - change_sums
        day_pct = np.divide(change_sums * 100.0, day_base, out=np.zeros_like(day_base), where=day_base != 0)
        ends_array = np.cumsum(counts)
        as_of = self._newest_of(self._sym_ts[syms], ends_array, counts, self.newest_ts)
        ingest = self._newest_of(self._sym_ingest[syms], ends_array, counts, self.newest_ingest)
        ends = ends_array.tolist()
        acct_ids = self._acct_ids
        heads = zip(
            indices.tolist(), self._seq[indices].tolist(), as_of.tolist(), ingest.tolist(),
            _cents(total), _cents(cash), _cents(value_sums), _cents(change_sums), map(round, day_pct.tolist(), _FOUR),
            [0, *ends[:-1]], ends, strict=True,
        )
        session, source = self.session, self.source
        out = [
            PortfolioSnapshot(
                account_id=acct_ids[i], seq=seq, as_of=a, ingest_ts=g, publish_ts=publish_ts,
                total_value=tv, cash=c, positions_value=pv, day_change=dc, day_change_pct=dp,
                positions=per_position[begin:end], session=session, source=source,
            )
            for i, seq, a, g, tv, c, pv, dc, dp, begin, end in heads
        ]
        self.stats.snapshots += len(out)
        return out


def _rolled(holdings: AccountHoldings, session: str) -> AccountHoldings:
    return msgspec.structs.replace(
        holdings,
        session=session,
        deposits_today=Decimal(0),
        positions=[
            msgspec.structs.replace(p, start_qty=p.qty, net_cost_today=Decimal(0)) for p in holdings.positions
        ],
    )
