"""Pre-trade rules that hold whatever the broker: a sell needs the position, an order is worth $1.

`POST /api/trade` applies them before an order goes to any broker, because brokers differ in what
they enforce: Alpaca turns a whole-share sell with no position into a short on a margin account,
and takes an order by qty worth a few cents. The paper broker checks the same rules again under its
account lock, which stays the last word when two orders race; these checks are what every broker
gets, and what keeps a refused order from ever reaching one.

Pure functions (no I/O, no Ray): the caller reads the position from the broker and the last price
from Redis `price:{SYMBOL}` (as the paper broker does) and passes them in. The codes and messages
are the paper broker's, so a refusal reads the same with either broker.
"""

from __future__ import annotations

import math
from decimal import Decimal

from brokerage import paper_rules as rules
from brokerage.errors import Rejected
from brokerage.models import BrokerPosition, OrderRequest
from engine.types import LastPrice

ZERO = Decimal(0)


def needs_price(order: OrderRequest, position: BrokerPosition | None) -> bool:
    """Whether `check_order` needs the last price: to value a market order by qty, or to turn a
    notional sell into shares. A limit order is valued at its limit; selling a whole position
    is allowed at any value (that is how dust leaves an account)."""
    if order.notional is not None:
        return order.side == "sell"
    return order.limit_price is None and not _sells_everything(order, position)


def check_order(order: OrderRequest, position: BrokerPosition | None, last: LastPrice | None) -> None:
    """Raises `Rejected` (422) if the order breaks a pre-trade rule; `order` is already validated.

    `position` is the account's position in the symbol (needed for a sell, None if there is none),
    `last` its last price (needed when `needs_price` says so, None if nobody priced it).
    """
    if order.side == "sell":
        _check_covered(order, position, last)
    if order.qty is not None and not _sells_everything(order, position):
        basis = order.limit_price if order.limit_price is not None else _price(order, last)
        if order.qty * basis < rules.MIN_NOTIONAL:
            raise Rejected(
                f"order value {rules.cents(order.qty * basis)} is under the ${rules.MIN_NOTIONAL} minimum",
                code="below_minimum",
            )


def _check_covered(order: OrderRequest, position: BrokerPosition | None, last: LastPrice | None) -> None:
    """No short selling: the shares must be held and not already promised to open sell orders."""
    available = _available(position)
    if available <= 0:
        raise Rejected(f"no {order.symbol} position to sell (short selling is not allowed)", code="no_position")
    qty = order.qty
    if qty is None:
        qty = rules.shares_down(order.notional / _price(order, last))  # type: ignore[operator]  # a qty-less order has a notional (checked upstream)
    if qty > available:
        raise Rejected(
            f"insufficient qty: selling {qty} {order.symbol}, {available} available", code="insufficient_qty"
        )


def _available(position: BrokerPosition | None) -> Decimal:
    if position is None or position.qty <= 0:  # a negative qty is a short: nothing to sell
        return ZERO
    available = position.qty_available if position.qty_available is not None else position.qty
    return max(min(available, position.qty), ZERO)


def _sells_everything(order: OrderRequest, position: BrokerPosition | None) -> bool:
    return order.side == "sell" and position is not None and order.qty == position.qty


def _price(order: OrderRequest, last: LastPrice | None) -> Decimal:
    price = rules.to_price(last.last) if last is not None and math.isfinite(last.last) else ZERO
    if price <= 0:
        raise Rejected(
            f"no price for {order.symbol}: the symbol is not priced by the market data feed", code="no_price"
        )
    return price
