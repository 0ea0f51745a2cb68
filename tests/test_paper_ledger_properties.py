"""Ledger invariants of the paper broker under any sequence of deposits, trades, withdrawals and waits.

After every step the test re-derives the ledger from the broker's own activity log with an
independent average-cost replay and checks: cash is the sum of what moved; positions are the sum
of fills; cash + positions at cost = net deposits + realised gains, to the cent; nothing is ever
negative; every refusal was justified by what the account showed just before. The log itself is
held to what the test asked for: once a week has passed, every accepted transfer is complete and
the log moved exactly their amounts, and every fill belongs to an accepted order and adds up to
what that order says it filled. The timing and amount rules of `brokerage.paper_rules` get their
own properties at the end.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from paper_support import MON_MORNING, funded_account, make_broker, set_price, sqlite_url

from brokerage import paper_rules as rules
from brokerage.errors import InvalidRequest, Rejected
from brokerage.models import Order, OrderRequest, Transfer
from brokerage.paper import PaperBroker
from engine import calendar
from engine.clock import ManualClock

CENT = Decimal("0.01")
SYMBOLS = ("AAPL", "MSFT")

money = st.integers(1, 400_000).map(lambda c: Decimal(c) / 100)  # $0.01 .. $4,000.00
shares = st.integers(1, 5 * 10**9).map(lambda n: Decimal(n).scaleb(-9))  # 1e-9 .. 5 shares
prices = st.integers(100, 50_000_00).map(lambda c: Decimal(c) / 10_000)  # $0.01 .. $500.00, 4 decimals
notionals = st.integers(100, 400_000).map(lambda c: Decimal(c) / 100)  # $1.00 .. $4,000.00
fundings = st.integers(1_000, 20_000).map(Decimal)
symbols = st.sampled_from(SYMBOLS)
steps = st.one_of(
    st.tuples(st.just("deposit"), money),
    st.tuples(st.just("withdraw"), money),
    st.tuples(st.just("buy_qty"), symbols, shares),
    st.tuples(st.just("buy_notional"), symbols, notionals),
    st.tuples(st.just("buy_limit"), symbols, shares, st.sampled_from(["0.97", "1.00", "1.03"])),
    st.tuples(st.just("sell"), symbols, st.sampled_from(["0.25", "0.5", "1"])),
    st.tuples(st.just("price"), symbols, prices),
    st.tuples(st.just("wait"), st.integers(1, 4 * 24 * 60)),
)


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def reconcile(broker: PaperBroker, account_id: str) -> None:
    account = broker.get_account(account_id)
    positions = {p.symbol: p for p in broker.list_positions(account_id)}
    log = list(reversed(broker.list_activities(account_id)))  # oldest first, in the order applied
    cash, net_deposits, realised = Decimal(0), Decimal(0), Decimal(0)
    held: dict[str, tuple[Decimal, Decimal]] = {}
    for act in log:
        cash += act.net_amount
        assert cash >= 0, "cash went negative at some point of the log"
        if act.activity_type != "FILL":
            net_deposits += act.net_amount
            continue
        assert act.qty is not None and act.price is not None and act.symbol is not None
        amount = cents(act.qty * act.price)
        qty, cost = held.get(act.symbol, (Decimal(0), Decimal(0)))
        if act.side == "buy":
            assert act.net_amount == -amount
            held[act.symbol] = (qty + act.qty, cost + amount)
        else:
            assert act.net_amount == amount and act.qty <= qty, "sold more than held"
            removed = cost if act.qty == qty else cents(cost * act.qty / qty)
            realised += amount - removed
            held[act.symbol] = (qty - act.qty, cost - removed)
    held = {s: v for s, v in held.items() if v[0] != 0}
    assert account.cash == cash
    assert {s: (p.qty, p.cost_basis) for s, p in positions.items()} == held
    assert account.cash + sum((p.cost_basis for p in positions.values()), Decimal(0)) == net_deposits + realised
    assert all(p.qty > 0 and p.cost_basis >= 0 for p in positions.values())
    assert 0 <= account.cash_withdrawable <= account.cash and 0 <= account.buying_power <= account.cash


def matches_what_was_asked(
    broker: PaperBroker, account_id: str, funding: Decimal, transfers: list[Transfer], orders: list[Order]
) -> None:
    """The log against the test's own record of what the broker accepted (days later)."""
    log = broker.list_activities(account_id)
    assert all(broker.get_transfer(account_id, t.id).status == "COMPLETE" for t in transfers)
    asked = funding + sum((t.amount if t.direction == "INCOMING" else -t.amount for t in transfers), Decimal(0))
    assert sum((a.net_amount for a in log if a.activity_type != "FILL"), Decimal(0)) == asked
    accepted = {o.id: o for o in orders}
    filled: dict[str, Decimal] = {}
    for act in log:
        if act.activity_type == "FILL":
            assert act.order_id in accepted, "a fill of an order nobody placed"
            assert (act.symbol, act.side) == (accepted[act.order_id].symbol, accepted[act.order_id].side)
            filled[act.order_id] = filled.get(act.order_id, Decimal(0)) + act.qty
    for order in (broker.get_order(account_id, o.id) for o in orders):
        assert order.status in ("filled", "canceled", "expired", "rejected"), f"still {order.status} days later"
        assert order.filled_qty == filled.get(order.id, Decimal(0))
        if order.status == "filled" and order.qty is not None:
            assert order.filled_qty == order.qty


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(funding=fundings, script=st.lists(steps, min_size=1, max_size=25))
def test_any_sequence_of_operations_keeps_the_ledger_reconciled(
    redis_url: str, funding: Decimal, script: list[tuple]
) -> None:
    for symbol in SYMBOLS:
        set_price(redis_url, symbol, 100.0)
    last = {symbol: Decimal(100) for symbol in SYMBOLS}
    with tempfile.TemporaryDirectory() as folder:
        clock = ManualClock(MON_MORNING)
        broker = make_broker(sqlite_url(Path(folder)), clock, redis_url)
        account_id, rel_id = funded_account(broker, clock, str(funding))  # the market is open now
        transfers: list[Transfer] = []
        orders: list[Order] = []
        for step in script:
            before = broker.get_account(account_id)
            kind = step[0]
            try:
                if kind == "deposit":
                    transfers.append(broker.create_transfer(account_id, rel_id, step[1], "INCOMING"))
                elif kind == "withdraw":
                    transfers.append(broker.create_transfer(account_id, rel_id, step[1], "OUTGOING"))
                elif kind == "buy_qty":
                    orders.append(
                        broker.submit_order(account_id, OrderRequest(symbol=step[1], side="buy", qty=step[2]))
                    )
                elif kind == "buy_notional":
                    request = OrderRequest(symbol=step[1], side="buy", notional=step[2])
                    orders.append(broker.submit_order(account_id, request))
                elif kind == "buy_limit":
                    limit = (last[step[1]] * Decimal(step[3])).quantize(CENT)
                    request = OrderRequest(
                        symbol=step[1], side="buy", type="limit", qty=step[2], limit_price=max(limit, CENT)
                    )
                    orders.append(broker.submit_order(account_id, request))
                elif kind == "sell":
                    held = {p.symbol: p.qty_available for p in broker.list_positions(account_id)}
                    qty = (held.get(step[1], Decimal(0)) * Decimal(step[2])).quantize(Decimal("1e-9"))
                    if qty > 0:
                        orders.append(
                            broker.submit_order(account_id, OrderRequest(symbol=step[1], side="sell", qty=qty))
                        )
                elif kind == "price":
                    last[step[1]] = step[2]
                    set_price(redis_url, step[1], float(step[2]))
                else:
                    clock.advance(dt.timedelta(minutes=step[1]))
            except Rejected as exc:
                justified = {
                    "insufficient_funds": kind == "withdraw" and step[1] > before.cash_withdrawable,
                    "ach_daily_limit": kind == "withdraw",
                    "insufficient_buying_power": kind.startswith("buy"),
                    "too_small": kind == "buy_notional",
                    "below_minimum": kind in ("buy_qty", "buy_limit", "sell"),
                    "pdt_rule": kind == "sell" and before.daytrade_count >= 3,
                }
                assert justified.get(exc.code, False), f"unjustified refusal {exc.code}: {exc.message}"  # noqa: PT017
                if exc.code == "insufficient_buying_power" and kind == "buy_qty":
                    assert cents(step[2] * last[step[1]]) > before.buying_power
            clock.advance(dt.timedelta(seconds=1))  # every step at its own moment: the log has an order
            reconcile(broker, account_id)
        # a week later, during a session (orders queued outside hours fill at an open)
        clock.set(
            calendar.session_bounds(calendar.add_trading_days(clock.now().date(), 5))[0] + dt.timedelta(minutes=1)
        )
        broker.process_due()
        reconcile(broker, account_id)
        matches_what_was_asked(broker, account_id, funding, transfers, orders)
        kinds = {a.activity_type for a in broker.list_activities(account_id)}
        event(f"activities: {sorted(kinds)}")  # shown by --hypothesis-show-statistics
        broker.db.close()


# --- the timing and amount rules on their own ---------------------------------------------------------
moments = st.datetimes(
    # hypothesis takes naive bounds and adds the zone itself
    min_value=dt.datetime(2001, 1, 1), max_value=dt.datetime(2026, 6, 30), timezones=st.just(dt.UTC),  # noqa: DTZ001
)


@settings(max_examples=200, deadline=None)
@given(created=moments)
def test_a_transfer_completes_at_the_first_open_after_it_is_created(created: dt.datetime) -> None:
    sent, complete = rules.transfer_schedule(created)
    assert created <= sent <= complete
    day = complete.date()
    assert calendar.is_trading_day(day) and calendar.session_bounds(day)[0] == complete
    previous_open = calendar.session_bounds(calendar.previous_trading_day(day))[0]
    assert previous_open <= created < complete  # no open in between
    assert rules.current_session(complete) == day


@settings(max_examples=200, deadline=None)
@given(moment=moments)
def test_the_current_session_is_the_latest_that_has_opened(moment: dt.datetime) -> None:
    session = rules.current_session(moment)
    assert calendar.is_trading_day(session)
    assert (
        calendar.session_bounds(session)[0] <= moment < calendar.session_bounds(calendar.next_trading_day(session))[0]
    )
    assert rules.settle_date(session) == calendar.next_trading_day(session)


@given(units=st.integers(-10**6, 10**6), places=st.integers(0, 5))
def test_amounts_are_accepted_exactly_when_positive_whole_cents(units: int, places: int) -> None:
    value = Decimal(units).scaleb(-places)
    whole_cents = value == value.quantize(CENT)
    try:
        accepted = rules.check_amount(value)
    except InvalidRequest:
        assert value <= 0 or not whole_cents
    else:
        assert value > 0 and whole_cents and accepted == value
