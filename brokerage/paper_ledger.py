"""The paper ledger's money rules as plain functions over plain values.

Nothing here reads a database, a price or the clock: `brokerage.paper` loads one account's rows
under its lock into a `Book`, asks these functions what may happen, and `brokerage.paper_tables`
writes the changes they return. So the rules (reservations, fills and average cost, the PDT rule,
withdrawals and the daily ACH limit, transfer and order steps, closing an account) are tested on
their own, and the SQL is only loading, locking and applying.

Rules: a buy pays `round(qty * price, cents)`; a position keeps its cost basis (average cost; a
partial sale removes its share of the cost, rounded to cents); sale proceeds are cash at once
(usable for buying) but withdrawable only after T+1 settlement; open buy orders set cash aside and
open sell orders set shares aside, so neither can be spent twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from brokerage import paper_rules as rules
from brokerage.errors import Rejected

ZERO = Decimal(0)
OPEN_ORDER = ("new", "accepted")
PENDING_TRANSFER = ("QUEUED", "SENT_TO_CLEARING")
VOID_TRANSFER = ("CANCELED", "REJECTED", "RETURNED")
CLOSED = "ACCOUNT_CLOSED"


@dataclass(frozen=True)
class Holding:
    qty: Decimal
    cost: Decimal


@dataclass(frozen=True)
class OpenOrder:
    """What an open order sets aside: dollars for a buy, shares for a sell."""

    id: str
    symbol: str
    side: str
    reserve: Decimal


@dataclass(frozen=True)
class OrderTerms:
    """An order as the rules see it (a row of `paper_orders`, or a request being checked)."""

    id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    session: dt.date
    status: str = "accepted"
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None


@dataclass(frozen=True)
class Pdt:
    """The pattern-day-trader rule as configured (off by default, as in the settings)."""

    enabled: bool = False
    equity_threshold: Decimal = Decimal("25000")
    max_day_trades: int = 3


@dataclass(frozen=True)
class Book:
    """One account as loaded under its lock: what every money rule decides from."""

    id: str
    status: str
    cash: Decimal
    holdings: Mapping[str, Holding]
    open_orders: tuple[OpenOrder, ...]
    bought_this_session: frozenset[str] = frozenset()
    day_trades: int = 0

    def qty(self, symbol: str) -> Decimal:
        held = self.holdings.get(symbol)
        return held.qty if held else ZERO

    def buy_reserves(self, excluding: str | None = None) -> Decimal:
        return sum((o.reserve for o in self.open_orders if o.side == "buy" and o.id != excluding), ZERO)

    def sell_reserve(self, symbol: str, excluding: str | None = None) -> Decimal:
        return sum(
            (o.reserve for o in self.open_orders if o.side == "sell" and o.symbol == symbol and o.id != excluding),
            ZERO,
        )

    def buying_power(self, excluding: str | None = None) -> Decimal:
        return self.cash - self.buy_reserves(excluding)


@dataclass(frozen=True)
class Fill:
    """A fill decided by `plan_fill`: what to record and what the account holds afterwards."""

    order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    amount: Decimal
    session: dt.date
    day_trade: bool
    cash_after: Decimal
    holding_after: Holding

    @property
    def settle_date(self) -> dt.date:
        return rules.settle_date(self.session)


# --- cash ---------------------------------------------------------------------------------------
def checked_cash(cash: Decimal) -> Decimal:
    """Cash as stored: whole cents, never negative (a guard on the guards: every path checks funds first)."""
    cash = rules.cents(cash)
    if cash < 0:
        raise Rejected("the ledger refused a change that would make cash negative", code="insufficient_funds")
    return cash


def require_active(book: Book) -> None:
    if book.status != "ACTIVE":
        raise Rejected(f"account is {book.status}", code="account_not_active")


# --- orders -------------------------------------------------------------------------------------
def reserve_for(book: Book, order: OrderTerms, price: Decimal) -> Decimal:
    """What a new order sets aside, after checking it is there to set aside."""
    basis = order.limit_price if order.limit_price is not None else price
    if order.qty is not None and order.qty * basis < rules.MIN_NOTIONAL:
        whole = order.side == "sell" and order.qty == book.qty(order.symbol)
        if not whole:  # selling all of a position worth under $1 is how dust leaves the account
            raise Rejected(
                f"order value {rules.cents(order.qty * basis)} is under the ${rules.MIN_NOTIONAL} minimum",
                code="below_minimum",
            )
    if order.side == "buy":
        need = order.notional if order.qty is None else rules.cents(order.qty * basis)
        assert need is not None  # `rules.check_order` gives exactly one of qty and notional
        power = book.buying_power()
        if need > power:
            raise Rejected(
                f"insufficient buying power: the order needs {need}, {max(power, ZERO)} available",
                code="insufficient_buying_power",
            )
        return need
    qty = order.qty if order.qty is not None else rules.shares_down(_notional(order) / price)
    available = book.qty(order.symbol) - book.sell_reserve(order.symbol)
    if available <= 0:
        raise Rejected(f"no {order.symbol} position to sell (short selling is not allowed)", code="no_position")
    if qty > available:
        raise Rejected(
            f"insufficient qty: selling {qty} {order.symbol}, {available} available", code="insufficient_qty"
        )
    return qty


def plan_fill(
    book: Book, order: OrderTerms, price: Decimal, session: dt.date, pdt: Pdt, equity: Callable[[], Decimal]
) -> Fill | Rejected:
    """Fills `order` at `price` in `session`, or says why it cannot. `equity` is asked only when the
    PDT rule needs it (it reads prices)."""
    qty = order.qty if order.qty is not None else rules.shares_down(_notional(order) / price)
    if qty <= 0:
        return Rejected(f"notional is too small to buy a fraction of {order.symbol} at {price}", code="too_small")
    amount = rules.cents(qty * price)
    held = book.holdings.get(order.symbol, Holding(ZERO, ZERO))
    day_trade = False
    if order.side == "buy":
        power = book.buying_power(excluding=order.id)
        if amount > power:
            return Rejected(
                f"insufficient buying power: {amount} needed, {max(power, ZERO)} available",
                code="insufficient_buying_power",
            )
        cash, after = book.cash - amount, Holding(held.qty + qty, held.cost + amount)
    else:
        free = held.qty - book.sell_reserve(order.symbol, excluding=order.id)
        if qty > free:
            return Rejected(
                f"insufficient qty: selling {qty} {order.symbol}, {max(free, ZERO)} held", code="insufficient_qty"
            )
        day_trade = order.symbol in book.bought_this_session
        if day_trade and pdt.enabled and book.day_trades >= pdt.max_day_trades:
            value = equity()
            if value < pdt.equity_threshold:
                return Rejected(
                    f"pattern day trader rule: {book.day_trades} day trades in the last 5 trading days and"
                    f" equity {value} is under {pdt.equity_threshold}",
                    code="pdt_rule",
                )
        removed = held.cost if qty == held.qty else rules.cents(held.cost * qty / held.qty)
        cash, after = book.cash + amount, Holding(held.qty - qty, held.cost - removed)
    return Fill(order.id, order.symbol, order.side, qty, price, amount, session, day_trade, checked_cash(cash), after)


def after_fill(book: Book, fill: Fill) -> Book:
    """The book once `fill` is written, so the next order of the same pass sees it."""
    holdings = {s: h for s, h in book.holdings.items() if s != fill.symbol}
    if fill.holding_after.qty != 0:
        holdings[fill.symbol] = fill.holding_after
    bought = book.bought_this_session | ({fill.symbol} if fill.side == "buy" else set())
    return replace(
        book,
        cash=fill.cash_after,
        holdings=holdings,
        open_orders=tuple(o for o in book.open_orders if o.id != fill.order_id),
        bought_this_session=frozenset(bought),
        day_trades=book.day_trades + int(fill.day_trade),
    )


def marketable(order: OrderTerms, price: Decimal) -> bool:
    if order.type != "limit" or order.limit_price is None:
        return True
    return price <= order.limit_price if order.side == "buy" else price >= order.limit_price


def expires_at(order: OrderTerms) -> dt.datetime | None:
    """Day limit orders end with their session; market orders wait for the next open however late."""
    if order.type != "limit" or order.time_in_force != "day":
        return None
    return rules.session_close(order.session)


def expired(order: OrderTerms, now: dt.datetime) -> bool:
    end = expires_at(order)
    return end is not None and now >= end


OrderStep = Literal["expire", "wait", "rest", "fill"]


def order_step(order: OrderTerms, now: dt.datetime, is_open: bool, price: Decimal | None) -> OrderStep:
    """What a due pass does with an open order: expire it, leave it waiting (market closed or no
    price yet), rest it on the book (a limit not reached), or try to fill it."""
    if expired(order, now):
        return "expire"
    if not is_open or price is None:
        return "wait"
    return "fill" if marketable(order, price) else "rest"


# --- transfers ----------------------------------------------------------------------------------
def withdrawable(cash: Decimal, unsettled: Decimal, buy_reserves: Decimal) -> Decimal:
    return max(cash - unsettled - buy_reserves, ZERO)


def check_withdrawal(amount: Decimal, available: Decimal, sent_today: Decimal, daily_limit: Decimal) -> None:
    if amount > available:
        raise Rejected(
            f"insufficient withdrawable cash: {amount} requested, {available} available", code="insufficient_funds"
        )
    if sent_today + amount > daily_limit:
        raise Rejected(
            f"daily ACH withdrawal limit of {daily_limit} exceeded ({sent_today} already withdrawn today)",
            code="ach_daily_limit",
        )


def counted_withdrawals(transfers: Iterable[tuple[Decimal, str]]) -> Decimal:
    """The day's withdrawals against the ACH limit: (amount, status) pairs, void ones not counted."""
    return sum((amount for amount, status in transfers if status not in VOID_TRANSFER), ZERO)


@dataclass(frozen=True)
class TransferStep:
    status: str
    cash_delta: Decimal


def transfer_step(
    direction: str, status: str, amount: Decimal, sent_at: dt.datetime, complete_at: dt.datetime, now: dt.datetime
) -> TransferStep | None:
    """A pending transfer's next status when it is due. A deposit's cash arrives when it completes;
    a withdrawal's cash left when it was created."""
    if now >= complete_at:
        return TransferStep("COMPLETE", amount if direction == "INCOMING" else ZERO)
    if status == "QUEUED" and now >= sent_at:
        return TransferStep("SENT_TO_CLEARING", ZERO)
    return None


def cancel_transfer_refund(direction: str, status: str, amount: Decimal) -> Decimal:
    """Only a QUEUED transfer can be cancelled; a cancelled withdrawal gives its cash back."""
    if status != "QUEUED":
        raise Rejected(f"transfer is {status} and can no longer be cancelled", code="not_cancelable")
    return amount if direction == "OUTGOING" else ZERO


# --- closing ------------------------------------------------------------------------------------
def closure_blockers(book: Book, deposit_in_flight: bool) -> list[str]:
    """Why the account cannot be closed yet (nothing when it can)."""
    problems = []
    if book.holdings:
        problems.append("positions are still open")
    if book.open_orders:
        problems.append("orders are still open")
    if book.cash > rules.CLOSE_ACCOUNT_MAX_CASH:
        problems.append(f"cash {book.cash} is above {rules.CLOSE_ACCOUNT_MAX_CASH}")
    if deposit_in_flight:
        problems.append("a deposit is still in flight")
    return problems


def _notional(order: OrderTerms) -> Decimal:
    assert order.notional is not None  # an order without qty has a notional (`rules.check_order`)
    return order.notional
