"""What the paper ledger reports, computed from plain values: balances as Alpaca reports them,
positions, the activity log, the engine's holdings and when the ledger next changes by itself.

Like `brokerage.paper_ledger`, nothing here touches the database or reads a price: the broker
hands in the rows it loaded and the prices it read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from brokerage import paper_rules as rules
from brokerage.models import Activity, BrokerPosition
from brokerage.paper_ledger import VOID_TRANSFER, ZERO, Holding
from engine.types import LastPrice, Position

Prices = Mapping[str, LastPrice | None]


@dataclass(frozen=True)
class TodayFlows:
    """Movements of the current session: net shares bought and net cost (buys minus sells) per
    symbol, negative when net sold, and the cash transfers moved in (+) or out (-)."""

    session: str
    bought: dict[str, Decimal]
    net_cost: dict[str, Decimal]
    transfers: Decimal

    @property
    def fills_cash(self) -> Decimal:
        return -sum(self.net_cost.values(), ZERO)


def today_flows(
    session: str, fills: Iterable[tuple[str, str, Decimal, Decimal]], transfers: Iterable[tuple[str, str, Decimal]]
) -> TodayFlows:
    """From the session's fills (symbol, side, qty, amount) and transfers (direction, status, amount):
    what turns today's holdings back into start-of-day holdings."""
    bought: dict[str, Decimal] = {}
    net_cost: dict[str, Decimal] = {}
    for symbol, side, qty, amount in fills:
        sign = 1 if side == "buy" else -1
        bought[symbol] = bought.get(symbol, ZERO) + sign * qty
        net_cost[symbol] = net_cost.get(symbol, ZERO) + sign * amount
    moved = ZERO
    for direction, status, amount in transfers:
        if direction == "INCOMING" and status == "COMPLETE":
            moved += amount
        elif direction == "OUTGOING" and status not in VOID_TRANSFER:
            moved -= amount
    return TodayFlows(session, bought, net_cost, moved)


def equity(cash: Decimal, holdings: Mapping[str, Holding], prices: Prices) -> Decimal:
    """Cash plus positions at their last price (at cost while a price is unknown)."""
    total = cash
    for symbol, held in holdings.items():
        last = prices.get(symbol)
        total += held.qty * rules.to_price(last.last) if last else held.cost
    return rules.cents(total)


def equity_and_last_equity(
    cash: Decimal, holdings: Mapping[str, Holding], flows: TodayFlows, prices: Prices
) -> tuple[Decimal, Decimal]:
    """Equity now, and `last_equity` (yesterday's close) rebuilt from today's flows and previous closes."""
    now, last_close = cash, cash - flows.fills_cash - flows.transfers
    for symbol in sorted(set(holdings) | set(flows.bought)):
        held = holdings.get(symbol, Holding(ZERO, ZERO))
        start_qty = held.qty - flows.bought.get(symbol, ZERO)
        last = prices.get(symbol)
        if last is not None:
            now += held.qty * rules.to_price(last.last)
            prev = rules.to_price(last.prev_close if last.prev_close > 0 else last.last)
        else:
            now += held.cost
            prev = held.cost / held.qty if held.qty else ZERO
        last_close += start_qty * prev
    return rules.cents(now), rules.cents(last_close)


def session_positions(holdings: Mapping[str, Holding], flows: TodayFlows) -> list[Position]:
    """The realtime engine's positions: today's quantity, the start-of-day quantity and today's net cost."""
    out = []
    for symbol in sorted(set(holdings) | set(flows.bought)):
        held = holdings.get(symbol, Holding(ZERO, ZERO))
        out.append(
            Position(
                symbol=symbol,
                qty=held.qty,
                start_qty=held.qty - flows.bought.get(symbol, ZERO),
                net_cost_today=flows.net_cost.get(symbol, ZERO),
                avg_entry_price=(held.cost / held.qty).quantize(rules.PRICE_STEP) if held.qty else ZERO,
            )
        )
    return out


def broker_position(symbol: str, held: Holding, last: LastPrice | None, set_aside: Decimal) -> BrokerPosition:
    price = rules.to_price(last.last) if last else None
    return BrokerPosition(
        symbol=symbol,
        qty=held.qty,
        avg_entry_price=(held.cost / held.qty).quantize(rules.PRICE_STEP),
        cost_basis=held.cost,
        current_price=price,
        market_value=rules.cents(held.qty * price) if price is not None else None,
        lastday_price=rules.to_price(last.prev_close) if last and last.prev_close > 0 else None,
        qty_available=held.qty - set_aside,
    )


def activity_log(
    fills: Iterable[tuple[float, int, Activity]], transfers: Iterable[tuple[float, Activity]]
) -> list[Activity]:
    """Newest first, in exactly the reverse of the order the ledger applied them (at one moment,
    transfers before fills, fills in sequence), so replaying the reversed list rebuilds the ledger.
    `fills` are (filled at, sequence, activity); `transfers` (moved at, activity) in creation order."""
    keyed = [(at, 1, seq, act) for at, seq, act in fills]
    keyed.extend((at, 0, i, act) for i, (at, act) in enumerate(transfers))
    keyed.sort(key=lambda k: k[:3], reverse=True)
    return [k[3] for k in keyed]


def next_due(
    now: dt.datetime,
    *,
    application_waiting: bool,
    next_transfer_step: dt.datetime | None,
    open_orders: bool,
    order_expiries: Iterable[dt.datetime | None],
    is_open: bool,
    next_settlement: dt.date | None,
) -> dt.datetime | None:
    """The earliest time-driven step: an application to approve (at once), a transfer reaching its
    ACH cut-off or completing, queued orders filling at the next open, a day order expiring at its
    close, and sale proceeds settling (nothing is written then, but the balances change)."""
    moments = [now] if application_waiting else []
    if next_transfer_step is not None:
        moments.append(next_transfer_step)
    if open_orders and not is_open:
        moments.append(rules.next_open_after(now))
    moments.extend(at for at in order_expiries if at is not None)
    if next_settlement is not None:
        moments.append(rules.settles_at(next_settlement))
    return min(moments, default=None)
