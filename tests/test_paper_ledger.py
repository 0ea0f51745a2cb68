"""The paper ledger's money rules on their own: plain values in, decisions out, no database, no Redis.

`tests/test_paper_ledger_properties.py` holds the whole broker (SQL included) to an independent
replay of its activity log; here the same average-cost arithmetic is the oracle for the rules alone,
and each refusal is checked at its boundary.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerage import paper_ledger as ledger
from brokerage import paper_rules as rules
from brokerage import paper_views as views
from brokerage.errors import Rejected
from brokerage.models import Activity
from brokerage.paper_ledger import Book, Fill, Holding, OpenOrder, OrderTerms, Pdt
from engine.types import LastPrice

UTC = dt.UTC
SESSION = dt.date(2025, 1, 14)  # a Tuesday
NOW = dt.datetime(2025, 1, 14, 16, 0, tzinfo=UTC)  # 11:00 in New York, the market open
CENT = Decimal("0.01")


def book(
    cash: str = "1000.00", holdings: dict[str, tuple[str, str]] | None = None, *,
    open_orders: tuple[OpenOrder, ...] = (), bought_this_session: frozenset[str] = frozenset(), day_trades: int = 0,
) -> Book:
    held = {s: Holding(Decimal(q), Decimal(c)) for s, (q, c) in (holdings or {}).items()}
    return Book("acct", "ACTIVE", Decimal(cash), held, open_orders, bought_this_session, day_trades)


def order(side: str, symbol: str = "AAPL", *, qty: str | None = None, notional: str | None = None,
          limit: str | None = None, tif: str = "day", oid: str = "o1") -> OrderTerms:
    return OrderTerms(
        id=oid, symbol=symbol, side=side, type="limit" if limit else "market", time_in_force=tif, session=SESSION,
        qty=Decimal(qty) if qty else None, notional=Decimal(notional) if notional else None,
        limit_price=Decimal(limit) if limit else None,
    )


def fill(b: Book, o: OrderTerms, price: str, pdt: Pdt = Pdt(), equity: str = "0") -> Fill | Rejected:
    return ledger.plan_fill(b, o, Decimal(price), SESSION, pdt, lambda: Decimal(equity))


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


# --- reservations ---------------------------------------------------------------------------------
def test_a_buy_sets_aside_its_cost_and_refuses_what_open_buys_already_hold() -> None:
    b = book("100.00", open_orders=(OpenOrder("x", "MSFT", "buy", Decimal("60.00")),))
    assert ledger.reserve_for(b, order("buy", qty="2"), Decimal("19.9975")) == Decimal("40.00")  # 39.995, half up
    with pytest.raises(Rejected) as refused:
        ledger.reserve_for(b, order("buy", notional="40.01"), Decimal("20"))
    assert refused.value.code == "insufficient_buying_power" and "40.00 available" in refused.value.message


def test_a_sell_sets_aside_shares_and_never_sells_short() -> None:
    b = book(holdings={"AAPL": ("10", "1000.00")}, open_orders=(OpenOrder("x", "AAPL", "sell", Decimal("7")),))
    assert ledger.reserve_for(b, order("sell", qty="3"), Decimal("100")) == Decimal("3")
    assert ledger.reserve_for(b, order("sell", notional="250.00"), Decimal("100")) == Decimal("2.5")
    with pytest.raises(Rejected, match="insufficient qty") as refused:
        ledger.reserve_for(b, order("sell", qty="3.000000001"), Decimal("100"))
    assert refused.value.code == "insufficient_qty"
    with pytest.raises(Rejected) as refused:
        ledger.reserve_for(book(), order("sell", qty="1"), Decimal("100"))
    assert refused.value.code == "no_position"


def test_orders_under_a_dollar_are_refused_except_selling_a_whole_dust_position() -> None:
    with pytest.raises(Rejected) as refused:
        ledger.reserve_for(book(), order("buy", qty="0.5"), Decimal("1.98"))
    assert refused.value.code == "below_minimum"
    dust = book(holdings={"AAPL": ("0.5", "0.99")})
    assert ledger.reserve_for(dust, order("sell", qty="0.5"), Decimal("1.98")) == Decimal("0.5")
    with pytest.raises(Rejected):
        ledger.reserve_for(dust, order("sell", qty="0.4"), Decimal("1.98"))


# --- fills ----------------------------------------------------------------------------------------
def test_a_buy_pays_whole_cents_and_adds_to_the_cost_basis() -> None:
    b = book("1000.00", {"AAPL": ("1", "100.00")})
    done = fill(b, order("buy", qty="3"), "33.3333")
    assert isinstance(done, Fill)
    assert (done.amount, done.cash_after) == (Decimal("100.00"), Decimal("900.00"))
    assert done.holding_after == Holding(Decimal("4"), Decimal("200.00"))
    assert done.settle_date == dt.date(2025, 1, 15) and not done.day_trade


def test_a_notional_buy_never_buys_more_than_it_pays_for() -> None:
    done = fill(book(), order("buy", notional="100.00"), "30.0000")
    assert isinstance(done, Fill)
    assert done.qty == Decimal("3.333333333") and done.amount == Decimal("100.00")
    too_small = fill(book(), order("buy", notional="0.000000001"), "30")
    assert isinstance(too_small, Rejected) and too_small.code == "too_small"


def test_a_partial_sale_removes_its_share_of_the_cost_and_a_whole_sale_all_of_it() -> None:
    b = book("0.00", {"AAPL": ("3", "100.00")})
    part = fill(b, order("sell", qty="1"), "50")
    assert isinstance(part, Fill)
    assert part.holding_after == Holding(Decimal("2"), Decimal("66.67")) and part.cash_after == Decimal("50.00")
    whole = fill(ledger.after_fill(b, part), order("sell", qty="2", oid="o2"), "50")
    assert isinstance(whole, Fill)
    assert whole.holding_after == Holding(Decimal("0"), Decimal("0.00"))
    assert "AAPL" not in ledger.after_fill(ledger.after_fill(b, part), whole).holdings


def test_a_fill_checks_funds_again_without_its_own_reservation() -> None:
    mine = OpenOrder("o1", "AAPL", "buy", Decimal("100.00"))
    b = book("150.00", open_orders=(mine, OpenOrder("o2", "MSFT", "buy", Decimal("60.00"))))
    refused = fill(b, order("buy", qty="1"), "100")
    assert isinstance(refused, Rejected) and refused.code == "insufficient_buying_power"
    assert isinstance(fill(b, order("buy", qty="0.9"), "100"), Fill)
    held = book(holdings={"AAPL": ("5", "500")}, open_orders=(OpenOrder("o9", "AAPL", "sell", Decimal("4")),))
    refused = fill(held, order("sell", qty="2"), "100")
    assert isinstance(refused, Rejected) and refused.code == "insufficient_qty"


def test_the_pdt_rule_refuses_a_day_trade_only_when_on_over_the_count_and_under_the_equity() -> None:
    b = book("0", {"AAPL": ("2", "200")}, bought_this_session=frozenset({"AAPL"}), day_trades=3)
    on = Pdt(enabled=True, equity_threshold=Decimal("25000"), max_day_trades=3)
    refused = fill(b, order("sell", qty="1"), "100", on, equity="24999.99")
    assert isinstance(refused, Rejected) and refused.code == "pdt_rule"
    allowed = fill(b, order("sell", qty="1"), "100", on, equity="25000")
    assert isinstance(allowed, Fill) and allowed.day_trade
    assert isinstance(fill(b, order("sell", qty="1"), "100", Pdt(), equity="1"), Fill)  # off by default
    fewer = fill(dataclasses.replace(b, day_trades=2), order("sell", qty="1"), "100", on, equity="1")
    assert isinstance(fewer, Fill)

    def equity_never_asked() -> Decimal:
        raise AssertionError("equity read although no day trade")

    not_bought_today = book("0", {"AAPL": ("2", "200")}, day_trades=9)
    plain = ledger.plan_fill(not_bought_today, order("sell", qty="1"), Decimal(100), SESSION, on, equity_never_asked)
    assert isinstance(plain, Fill) and not plain.day_trade


def test_cash_is_never_written_negative() -> None:
    with pytest.raises(Rejected):
        ledger.checked_cash(Decimal("-0.01"))
    assert ledger.checked_cash(Decimal("0.005")) == Decimal("0.01")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.sampled_from(["AAPL", "MSFT"]),
            st.integers(1, 5 * 10**9).map(lambda n: Decimal(n).scaleb(-9)),
            st.integers(100, 50_000_00).map(lambda c: Decimal(c) / 10_000),
        ),
        max_size=40,
    )
)
def test_any_sequence_of_fills_keeps_cash_plus_cost_equal_to_deposits_plus_realised_gains(
    trades: list[tuple[str, str, Decimal, Decimal]],
) -> None:
    b = book("5000.00")
    realised = Decimal(0)
    oracle: dict[str, tuple[Decimal, Decimal]] = {}
    for i, (side, symbol, qty, price) in enumerate(trades):
        price = price.quantize(rules.PRICE_STEP)
        done = ledger.plan_fill(
            b, order(side, symbol, qty=str(qty), oid=f"o{i}"), price, SESSION, Pdt(), lambda: Decimal(0)
        )
        held, cost = oracle.get(symbol, (Decimal(0), Decimal(0)))
        amount = cents(qty * price)
        if isinstance(done, Rejected):
            assert (side == "buy" and amount > b.cash) or (side == "sell" and qty > held)
            continue
        if side == "buy":
            oracle[symbol] = (held + qty, cost + amount)
        else:
            removed = cost if qty == held else cents(cost * qty / held)
            realised += amount - removed
            oracle[symbol] = (held - qty, cost - removed)
        b = ledger.after_fill(b, done)
        assert b.cash >= 0
    assert {s: (h.qty, h.cost) for s, h in b.holdings.items()} == {s: v for s, v in oracle.items() if v[0] != 0}
    assert b.cash + sum((h.cost for h in b.holdings.values()), Decimal(0)) == Decimal("5000.00") + realised


# --- order and transfer steps ---------------------------------------------------------------------
def test_order_steps_expire_wait_rest_and_fill() -> None:
    limit = order("buy", qty="1", limit="100")
    close = rules.session_close(SESSION)
    assert ledger.order_step(limit, close, True, Decimal(90)) == "expire"
    assert ledger.order_step(limit, NOW, False, Decimal(90)) == "wait"
    assert ledger.order_step(limit, NOW, True, None) == "wait"
    assert ledger.order_step(limit, NOW, True, Decimal("100.01")) == "rest"
    assert ledger.order_step(limit, NOW, True, Decimal(100)) == "fill"
    assert ledger.order_step(order("sell", qty="1", limit="100"), NOW, True, Decimal("99.99")) == "rest"
    gtc = order("buy", qty="1", limit="100", tif="gtc")
    assert ledger.expires_at(gtc) is None and ledger.order_step(gtc, close, True, Decimal(99)) == "fill"
    assert ledger.expires_at(order("buy", qty="1")) is None  # market orders wait for the next open


def test_transfers_move_on_at_their_cut_off_and_completion() -> None:
    sent, complete = NOW + dt.timedelta(hours=5), NOW + dt.timedelta(hours=22)
    step = ledger.transfer_step
    assert step("INCOMING", "QUEUED", Decimal(10), sent, complete, NOW) is None
    assert step("INCOMING", "QUEUED", Decimal(10), sent, complete, sent) == ledger.TransferStep(
        "SENT_TO_CLEARING", Decimal(0)
    )
    assert step("INCOMING", "SENT_TO_CLEARING", Decimal(10), sent, complete, sent) is None
    assert step("INCOMING", "QUEUED", Decimal(10), sent, complete, complete) == ledger.TransferStep(
        "COMPLETE", Decimal(10)
    )
    assert step("OUTGOING", "SENT_TO_CLEARING", Decimal(10), sent, complete, complete) == ledger.TransferStep(
        "COMPLETE", Decimal(0)
    )


def test_withdrawals_need_settled_cash_and_respect_the_daily_limit() -> None:
    assert ledger.withdrawable(Decimal(100), Decimal(30), Decimal(80)) == Decimal(0)
    assert ledger.withdrawable(Decimal(100), Decimal(30), Decimal(20)) == Decimal(50)
    ledger.check_withdrawal(Decimal(50), Decimal(50), Decimal(0), Decimal(50))
    with pytest.raises(Rejected) as refused:
        ledger.check_withdrawal(Decimal("50.01"), Decimal(50), Decimal(0), Decimal(100))
    assert refused.value.code == "insufficient_funds"
    sent = ledger.counted_withdrawals([(Decimal(40), "COMPLETE"), (Decimal(500), "RETURNED"), (Decimal(5), "QUEUED")])
    assert sent == Decimal(45)
    with pytest.raises(Rejected) as refused:
        ledger.check_withdrawal(Decimal("5.01"), Decimal(1000), sent, Decimal(50))
    assert refused.value.code == "ach_daily_limit"


def test_only_a_queued_transfer_is_cancelled_and_only_a_withdrawal_gives_cash_back() -> None:
    assert ledger.cancel_transfer_refund("OUTGOING", "QUEUED", Decimal(7)) == Decimal(7)
    assert ledger.cancel_transfer_refund("INCOMING", "QUEUED", Decimal(7)) == Decimal(0)
    with pytest.raises(Rejected) as refused:
        ledger.cancel_transfer_refund("OUTGOING", "SENT_TO_CLEARING", Decimal(7))
    assert refused.value.code == "not_cancelable"


def test_an_account_closes_only_empty() -> None:
    assert ledger.closure_blockers(book("1.00"), deposit_in_flight=False) == []
    problems = ledger.closure_blockers(
        book("1.01", {"AAPL": ("1", "1")}, open_orders=(OpenOrder("o", "AAPL", "sell", Decimal(1)),)), True
    )
    assert problems == [
        "positions are still open", "orders are still open", "cash 1.01 is above 1.00", "a deposit is still in flight",
    ]


# --- what the ledger reports ----------------------------------------------------------------------
def test_last_equity_is_rebuilt_from_today_flows_and_previous_closes() -> None:
    flows = views.today_flows(
        SESSION.isoformat(),
        [("AAPL", "buy", Decimal(2), Decimal("200.00")), ("MSFT", "sell", Decimal(1), Decimal("55.00"))],
        [
            ("INCOMING", "COMPLETE", Decimal(1000)),
            ("OUTGOING", "CANCELED", Decimal(9)),
            ("OUTGOING", "QUEUED", Decimal(5)),
        ],
    )
    assert (flows.transfers, flows.fills_cash, flows.bought) == (
        Decimal(995),
        Decimal("-145.00"),
        {"AAPL": 2, "MSFT": -1},
    )
    holdings = {"AAPL": Holding(Decimal(3), Decimal("290.00")), "MSFT": Holding(Decimal(1), Decimal("50.00"))}
    prices = {"AAPL": LastPrice("AAPL", 101.0, 99.0, 0.0, SESSION.isoformat(), "replay"), "MSFT": None}
    equity, last_equity = views.equity_and_last_equity(Decimal("850.00"), holdings, flows, prices)
    # now: cash + 3 AAPL at 101 + MSFT at cost;
    # yesterday: cash before today's flows + 1 AAPL at 99 + 2 MSFT at cost/share
    assert equity == Decimal("850.00") + 303 + 50
    assert last_equity == Decimal("850.00") + Decimal("145.00") - 995 + 99 + 2 * 50
    assert views.equity(Decimal(1), holdings, prices) == Decimal(1) + 303 + 50


def test_the_activity_log_is_the_reverse_of_the_order_applied() -> None:
    def act(name: str) -> Activity:
        return Activity(id=name, account_id="a", activity_type="X", date=NOW, net_amount=Decimal(0))

    fills = [(10.0, 2, act("fill-2")), (10.0, 1, act("fill-1")), (5.0, 3, act("fill-early"))]
    transfers = [(10.0, act("deposit")), (20.0, act("withdrawal"))]
    assert [a.id for a in views.activity_log(fills, transfers)] == [
        "withdrawal",
        "fill-2",
        "fill-1",
        "deposit",
        "fill-early",
    ]


def test_next_due_is_the_earliest_step() -> None:
    later = NOW + dt.timedelta(hours=3)
    due = views.next_due(
        NOW, application_waiting=False, next_transfer_step=later, open_orders=False, order_expiries=[],
        is_open=True, next_settlement=None,
    )
    assert due == later
    assert views.next_due(
        NOW, application_waiting=True, next_transfer_step=later, open_orders=False, order_expiries=[],
        is_open=True, next_settlement=None,
    ) == NOW
    closed_evening = dt.datetime(2025, 1, 14, 23, 0, tzinfo=UTC)
    assert views.next_due(
        closed_evening, application_waiting=False, next_transfer_step=None, open_orders=True, order_expiries=[None],
        is_open=False, next_settlement=dt.date(2025, 1, 16),
    ) == rules.next_open_after(closed_evening)
    assert views.next_due(
        NOW, application_waiting=False, next_transfer_step=None, open_orders=False, order_expiries=[],
        is_open=True, next_settlement=None,
    ) is None
