"""The valuation book against a straightforward recomputation, on the real daily prices."""

from __future__ import annotations

import csv
import gzip
import math
import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.coalescer import Coalescer
from engine.types import AccountHoldings, PortfolioSnapshot, Position, Tick
from engine.valuation import ValuationBook

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "daily-ohlcv-quandl-wiki.csv.gz"
SYMBOLS = ["AAPL", "MSFT", "IBM", "GOOG", "FB"]


def _data_file() -> Path:
    packaged = Path(__file__).resolve().parents[1] / "engine" / "data" / "daily-ohlcv-quandl-wiki.csv.gz"
    return packaged if packaged.exists() else DATA


@pytest.fixture(scope="module")
def days() -> list[tuple[str, dict[str, dict[str, float]]]]:
    """Trading days 2012-06-01..2012-07-31 with each symbol's open/high/low/close (real data)."""
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    with gzip.open(_data_file(), "rt") as f:
        for row in csv.DictReader(f):
            if "2012-05-25" <= row["Date"] <= "2012-07-31" and row["Ticker"] in SYMBOLS:
                table[row["Date"]][row["Ticker"]] = {k: float(row[k]) for k in ("Open", "High", "Low", "Close")}
    ordered = sorted(table.items())
    assert len(ordered) > 40 and all(len(v) == 5 for _, v in ordered)
    return ordered


def _accounts(seed: int, count: int, session: str, bought_today: bool) -> list[AccountHoldings]:
    rng = random.Random(seed)
    out = [AccountHoldings(account_id="empty", cash=Decimal("1234.56"), session=session)]
    for i in range(count):
        positions = []
        for symbol in rng.sample(SYMBOLS, rng.randint(1, 5)):
            qty = Decimal(rng.randint(1, 400)) / (4 if rng.random() < 0.2 else 1)
            start = qty if not bought_today or rng.random() < 0.5 else max(Decimal(0), qty - rng.randint(1, 10))
            cost = (qty - start) * Decimal(str(round(rng.uniform(20, 600), 2)))
            positions.append(Position(symbol=symbol, qty=qty, start_qty=start, net_cost_today=cost))
        cash = Decimal(rng.randint(0, 10_000_00)) / 100
        out.append(AccountHoldings(account_id=f"acct-{i}", cash=cash, positions=positions, session=session))
    return out


def _expected(h: AccountHoldings, last: dict[str, float], prev: dict[str, float], rolled: bool) -> dict:
    """The plain definition: value = cash + sum(qty*last); day change from the day's start and cost."""
    value = change = 0.0
    for p in h.positions:
        start = float(p.qty) if rolled else float(p.start_qty)
        cost = 0.0 if rolled else float(p.net_cost_today)
        value += float(p.qty) * last[p.symbol]
        change += float(p.qty) * last[p.symbol] - start * prev[p.symbol] - cost
    total = float(h.cash) + value
    base = total - change
    return {"total": total, "positions": value, "change": change, "pct": change * 100 / base if base else 0.0}


def _check(snap: PortfolioSnapshot, want: dict) -> None:
    assert snap.total_value == pytest.approx(want["total"], abs=0.006)
    assert snap.positions_value == pytest.approx(want["positions"], abs=0.006)
    assert snap.day_change == pytest.approx(want["change"], abs=0.006)
    assert snap.day_change_pct == pytest.approx(want["pct"], abs=1e-4)
    assert sum(p.market_value for p in snap.positions) == pytest.approx(
        snap.positions_value, abs=0.01 * len(snap.positions) + 0.006
    )


def _ticks(day: str, bars: dict[str, dict[str, float]], prev: dict[str, float], field: str, ts: float) -> list[Tick]:
    return [Tick(s, bars[s][field], prev[s], ts, day, "replay") for s in SYMBOLS]


def test_values_match_plain_computation_over_real_days(days) -> None:
    first_day, _first_bars = days[1]
    prev = {s: days[0][1][s]["Close"] for s in SYMBOLS}
    holdings = _accounts(1, 60, first_day, bought_today=True)
    book = ValuationBook()
    book.set_holdings(holdings)
    ts = 1.0
    seen_seq: dict[str, int] = {}
    for n, (day, bars) in enumerate(days[1:25]):
        rolled = n > 0
        for field in ("Open", "High", "Low", "Close"):
            ts += 1
            book.apply(_ticks(day, bars, prev, field, ts), ingest_ts=ts + 0.5)
            changed = book.flush()
            last = {s: bars[s][field] for s in SYMBOLS}
            snaps = book.snapshots(changed, publish_ts=ts + 1)
            assert {s.account_id for s in snaps} == {h.account_id for h in holdings} if field == "Open" else True
            for snap in snaps:
                h = next(x for x in holdings if x.account_id == snap.account_id)
                _check(snap, _expected(h, last, prev, rolled))
                assert snap.session == day and snap.source == "replay"
                assert snap.seq == seen_seq.get(snap.account_id, 0) + 1
                seen_seq[snap.account_id] = snap.seq
                if h.positions:
                    assert snap.as_of == ts and snap.ingest_ts == ts + 0.5
        prev = {s: bars[s]["Close"] for s in SYMBOLS}
    empty = book.snapshots(np.array([book.index_of("empty")]), publish_ts=0.0)[0]
    assert (empty.total_value, empty.cash, empty.day_change, empty.positions) == (1234.56, 1234.56, 0.0, [])
    assert (empty.as_of, empty.ingest_ts) == (ts, ts + 0.5)  # cash is current as of the newest tick


def test_session_boundary_rolls_the_day(days) -> None:
    (d1, bars1), (d2, bars2) = days[5], days[6]
    prev1 = {s: days[4][1][s]["Close"] for s in SYMBOLS}
    bought = AccountHoldings(
        account_id="a",
        cash=Decimal("100"),
        session=d1,
        deposits_today=Decimal("100"),
        positions=[Position("AAPL", qty=Decimal(10), start_qty=Decimal(0), net_cost_today=Decimal("5700.00"))],
    )
    book = ValuationBook()
    book.set_holdings([bought])
    book.apply(_ticks(d1, bars1, prev1, "Close", 1.0), 1.0)
    snap = book.snapshots(book.flush(), 2.0)[0]
    # bought today: the gain counts from the cost, never from yesterday's close; the deposit is no gain
    assert snap.day_change == pytest.approx(10 * bars1["AAPL"]["Close"] - 5700.0, abs=0.006)
    # the next session: what is held starts the day at yesterday's close
    prev2 = {s: bars1[s]["Close"] for s in SYMBOLS}
    book.apply(_ticks(d2, bars2, prev2, "Open", 3.0), 3.0)
    snap = book.snapshots(book.flush(), 4.0)[0]
    assert snap.session == d2
    want = 10 * (bars2["AAPL"]["Open"] - bars1["AAPL"]["Close"])
    assert snap.day_change == pytest.approx(want, abs=0.006)
    assert book.holdings("a").positions[0].start_qty == Decimal(10)
    # a late tick of the finished session is stale, not applied
    book.apply([Tick("AAPL", 1.0, 1.0, 5.0, d1, "replay")], 5.0)
    assert book.flush().size == 0 and book.stats.stale == 1


def test_holdings_loaded_after_roll_keep_todays_trades(days) -> None:
    (_d1, bars1), (d2, bars2) = days[5], days[6]
    book = ValuationBook()
    prev2 = {s: bars1[s]["Close"] for s in SYMBOLS}
    book.apply(_ticks(d2, bars2, prev2, "Open", 1.0), 1.0)
    book.flush()
    h = AccountHoldings(
        account_id="b", cash=Decimal(0), session=d2,
        positions=[Position("IBM", qty=Decimal(3), start_qty=Decimal(1), net_cost_today=Decimal("400"))],
    )
    book.set_holdings([h])
    snap = book.snapshots(book.flush(), 2.0)[0]
    want = 3 * bars2["IBM"]["Open"] - 1 * bars1["IBM"]["Close"] - 400
    assert snap.day_change == pytest.approx(want, abs=0.006)


def test_only_holders_are_touched_and_ticks_conflate() -> None:
    book = ValuationBook()
    book.set_holdings([
        AccountHoldings("ibm", Decimal(0), [Position("IBM", Decimal(2), Decimal(2))], session="2012-06-01"),
        AccountHoldings("fb", Decimal(0), [Position("FB", Decimal(5), Decimal(5))], session="2012-06-01"),
        AccountHoldings("none", Decimal(7)),
    ])
    book.apply(
        [Tick("IBM", 190.0, 189.0, 1, "2012-06-01", "replay"), Tick("FB", 27.0, 28.0, 1, "2012-06-01", "replay")], 1
    )
    assert set(book.ids_of(book.flush())) == {"ibm", "fb", "none"}  # all new: first snapshot for all
    book.apply(
        [Tick("IBM", 191.0, 189.0, 2, "2012-06-01", "replay"), Tick("IBM", 192.5, 189.0, 3, "2012-06-01", "replay")], 3
    )
    touched = book.flush()
    assert book.ids_of(touched) == ["ibm"]
    snap = book.snapshots(touched, 4)[0]
    assert (snap.total_value, snap.day_change, snap.as_of) == (385.0, 7.0, 3)
    assert book.totals()["ibm"] == pytest.approx((385.0, 7.0))
    # a symbol nobody holds moves nobody
    book.apply([Tick("MSFT", 29.0, 28.0, 4, "2012-06-01", "replay")], 4)
    assert book.flush().size == 0


def test_a_tick_older_than_the_last_never_replaces_it() -> None:
    """Ray runs an async actor's calls in any order, so batches can arrive out of event order; a
    price seeded from Redis can be older than what arrived meanwhile. Event time decides."""
    book = ValuationBook()
    book.set_holdings(
        [AccountHoldings("a", Decimal(0), [Position("IBM", Decimal(2), Decimal(2))], session="2012-06-01")]
    )
    book.apply([Tick("IBM", 190.0, 189.0, 5, "2012-06-01", "replay")], 5)
    book.flush()
    book.apply([Tick("IBM", 170.0, 189.0, 4, "2012-06-01", "replay")], 6)  # an older batch, executed later
    assert book.flush().size == 0 and book.last_price("IBM") == (190.0, 189.0) and book.stats.late == 1
    # within one flush too: the newest by event time wins, whatever the order queued
    book.apply([Tick("IBM", 195.0, 189.0, 8, "2012-06-01", "replay")], 7)
    book.apply([Tick("IBM", 191.0, 189.0, 7, "2012-06-01", "replay")], 7)
    (snap,) = book.snapshots(book.flush(), 9)
    assert (snap.total_value, snap.as_of, book.stats.late) == (390.0, 8, 1)


def test_a_symbol_shard_keeps_the_newest_price_whatever_order_batches_run_in() -> None:
    from engine.columns import encode_columns
    from engine.symbol_core import SymbolCore

    core = SymbolCore()
    core.set_holder(0, ["IBM"])
    core.route(encode_columns([Tick("IBM", 190.0, 189.0, 5, "2012-06-01", "replay")], 5))
    core.route(encode_columns([Tick("IBM", 170.0, 189.0, 4, "2012-06-01", "replay")], 6))  # older, later
    assert [(p.symbol, p.last, p.ts) for p in core.take_prices()] == [("IBM", 190.0, 5)]


def test_bad_prices_are_rejected_and_counted() -> None:
    book = ValuationBook()
    book.set_holdings([AccountHoldings("a", Decimal(0), [Position("IBM", Decimal(1), Decimal(1))])])
    bad = [
        Tick("IBM", float("nan"), 1.0, 1, "2012-06-01", "replay"),
        Tick("IBM", -3.0, 1.0, 1, "2012-06-01", "replay"),
        Tick("IBM", 3.0, float("inf"), 1, "2012-06-01", "replay"),
        Tick("IBM", 0.0, 1.0, 1, "2012-06-01", "replay"),
    ]
    assert book.apply(bad, 1) == 4
    assert book.stats.rejected == 4 and book.stats.ticks == 0
    book.apply([Tick("IBM", 3.0, 2.0, 1, "2012-06-01", "replay")], 1)
    snap = book.snapshots(book.flush(), 2)[0]
    assert (snap.total_value, snap.day_change) == (3.0, 1.0)


def test_position_without_a_price_shows_its_cost_and_no_change() -> None:
    book = ValuationBook()
    book.set_holdings(
        [AccountHoldings("a", Decimal(5), [Position("ZZZ", Decimal(2), Decimal(2), avg_entry_price=Decimal("10"))])]
    )
    snap = book.snapshots(book.flush(), 1)[0]
    assert (snap.total_value, snap.day_change) == (25.0, 0.0)
    book.apply([Tick("ZZZ", 11.0, 10.5, 1, "2012-06-01", "replay")], 1)
    snap = book.snapshots(book.flush(), 2)[0]
    assert (snap.total_value, snap.day_change) == (27.0, 1.0)


def test_removed_and_replaced_accounts() -> None:
    book = ValuationBook()
    book.set_holdings(
        [AccountHoldings("a", Decimal(1), [Position("IBM", Decimal(1), Decimal(1))]), AccountHoldings("b", Decimal(2))]
    )
    book.apply([Tick("IBM", 3.0, 2.0, 1, "2012-06-01", "replay")], 1)
    book.flush()
    book.remove_accounts(["a"])
    book.set_holdings(
        [AccountHoldings("b", Decimal(2), [Position("IBM", Decimal(4), Decimal(4))], session="2012-06-01")]
    )
    changed = book.flush()
    assert book.ids_of(changed) == ["b"] and book.held_symbols() == {"IBM"}
    assert book.snapshots(changed, 1)[0].total_value == 14.0
    book.apply([Tick("IBM", 4.0, 2.0, 2, "2012-06-01", "replay")], 2)
    assert book.ids_of(book.flush()) == ["b"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.floats(0.5, 1000)), min_size=1, max_size=60), st.integers(1, 6))
def test_incremental_equals_full_recomputation(moves, flush_every) -> None:
    symbols = [f"S{i}" for i in range(8)]
    rng = random.Random(len(moves))
    holdings = [
        AccountHoldings(
            f"x{i}",
            Decimal(i),
            [Position(s, Decimal(rng.randint(1, 50)), Decimal(rng.randint(0, 50))) for s in rng.sample(symbols, 3)],
            session="d",
        )
        for i in range(20)
    ]
    book = ValuationBook()
    book.set_holdings(holdings)
    book.apply([Tick(s, 10.0, 9.0, 0, "d", "simulated") for s in symbols], 0)
    book.flush()
    last = dict.fromkeys(symbols, 10.0)
    for n, (i, price) in enumerate(moves):
        book.apply([Tick(symbols[i], price, 9.0, n, "d", "simulated")], n)
        last[symbols[i]] = price
        if n % flush_every == 0:
            book.flush()
    book.flush()
    fresh = ValuationBook()
    fresh.set_holdings(holdings)
    fresh.apply([Tick(s, p, 9.0, 0, "d", "simulated") for s, p in last.items()], 0)
    fresh.flush()
    for account, (total, change) in fresh.totals().items():
        got = book.totals()[account]
        assert math.isclose(got[0], total, rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(got[1], change, rel_tol=1e-9, abs_tol=1e-6)


def test_coalescer_rate_limits_live_accounts_and_trickles_idle_ones() -> None:
    co = Coalescer(publish_hz=4.0, idle_refresh_s=10.0)
    co.set_live(np.array([0, 1]), size=4, now=0.0)
    co.mark(np.array([0, 1, 2, 3]), size=4, now=0.0)
    live, idle = co.due(now=0.0, size=4)
    assert live.tolist() == [0, 1] and idle.size <= 2
    live2, idle2 = co.due(now=1.0, size=4)  # every idle account gets its first write within a second
    assert live2.size == 0 and sorted(idle.tolist() + idle2.tolist()) == [2, 3]
    co.mark(np.array([0, 2]), size=4, now=1.1)
    live, idle = co.due(now=1.1, size=4)
    assert live.tolist() == [0] and idle.size == 0  # idle: not before its refresh period
    co.mark(np.array([0]), size=4, now=1.2)
    assert co.due(now=1.2, size=4)[0].size == 0  # at most 4 per second: the change waits...
    assert co.due(now=1.35, size=4)[0].tolist() == [0]  # ...and goes out as the latest state
    assert co.due(now=12.0, size=4)[1].tolist() == [2]
    assert co.pending(4) == 0


def test_live_accounts_share_the_publish_budget() -> None:
    """Three watched accounts under a budget of 12 snapshots/s: 4 per second each, not the 8 Hz cap."""
    co = Coalescer(publish_hz=8.0, idle_refresh_s=10.0, budget_per_s=12.0)
    co.set_live(np.array([0, 1, 2]), size=3, now=0.0)
    sent = 0
    for step in range(100):  # 1 s in 10 ms steps, every account changing all the time
        now = step / 100
        co.mark(np.array([0, 1, 2]), size=3, now=now)
        sent += len(co.due(now, size=3)[0])
    assert sent == 12
    co.set_live(np.array([0]), size=3, now=1.0)  # one watcher left: the per-account cap applies
    sent = 0
    for step in range(100, 200):
        now = step / 100
        co.mark(np.array([0, 1, 2]), size=3, now=now)
        sent += len(co.due(now, size=3)[0])
    assert sent == 8


def test_columns_of_unequal_length_are_rejected_whole() -> None:
    book = ValuationBook()
    book.set_holdings([AccountHoldings("a", Decimal(0), [Position("IBM", Decimal(1), Decimal(1))])])
    assert book.apply_columns(["IBM", "IBM"], [1.0], [1.0, 1.0], [1.0, 1.0], "2012-06-01", "replay", 1.0) == 2
    assert book.stats.rejected == 2 and book.stats.ticks == 0
    assert book.apply_columns(["IBM"], [2.0], [1.5], [1.0], "2012-06-01", "replay", 1.0) == 0
    assert book.snapshots(book.flush(), 2.0)[0].total_value == 2.0


def test_a_new_subscriber_gets_a_snapshot_of_an_unchanged_account() -> None:
    """It may have read `portfolio:last` before the shard first wrote it: a quiet account must not stay blank."""
    import numpy as np

    co = Coalescer(publish_hz=4.0, idle_refresh_s=10.0)
    co.mark(np.array([0, 1]), 2, now=100.0)
    live, quiet = co.due(now=102.0, size=2)
    assert (list(live), sorted(quiet)) == ([], [0, 1])  # written as last values, nobody listening
    assert [list(x) for x in co.due(now=103.0, size=2)] == [[], []]  # nothing changed since
    co.set_live(np.array([1]), 2, now=104.0)
    live, quiet = co.due(now=104.0, size=2)
    assert (list(live), list(quiet)) == ([1], [])
    co.set_live(np.array([1]), 2, now=105.0)  # still watched, still unchanged: nothing new to send
    assert [list(x) for x in co.due(now=106.0, size=2)] == [[], []]
