"""The trade agent's tools. `buy` and `sell` only check an order and describe it: the order is placed
by the graph's confirmation step, after the person's explicit confirm, and never by a tool."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agents.deps import AgentDeps
from agents.tools.analyst import symbol_of
from agents.tools.portfolio import rebalance_plan
from agents.tools.registry import agent_tool, as_data, money, plain
from brokerage import order_rules
from brokerage import paper_rules as rules
from brokerage.errors import BrokerageError, Rejected
from brokerage.models import OrderRequest
from engine.chat import PendingOrder

AGENT = "trade_execution"
AWAITING = "awaiting_confirmation"
PLANNED = "planned"


def order_request(pending: PendingOrder, client_order_id: str | None = None) -> OrderRequest:
    """The market order a confirmed `pending` order places: exactly what the person was shown."""
    return OrderRequest(
        symbol=pending.symbol,
        side=pending.side,
        type="market",
        notional=None if pending.notional is None else Decimal(pending.notional),
        qty=None if pending.qty is None else Decimal(pending.qty),
        time_in_force="day",
        client_order_id=client_order_id,
    )


def check(deps: AgentDeps, account_id: str, side: str, symbol: str, notional: str, qty: str) -> PendingOrder:
    """The deterministic pre-trade checks; raises a `BrokerageError` saying what is wrong."""
    if bool(notional.strip()) == bool(qty.strip()):
        raise Rejected("say either a dollar amount or a number of shares (exactly one)", code="amount_missing")
    ticker = symbol_of(deps, symbol)
    account = deps.broker.get_account(account_id)
    if account.status.upper() != "ACTIVE":
        raise Rejected(f"the account is {account.status.lower()}, not active: it cannot trade", code="account_inactive")
    position = next((p for p in deps.broker.list_positions(account_id) if p.symbol == ticker), None)
    if side == "sell" and qty.strip().lower() == "all":
        if position is None or position.qty <= 0:
            raise Rejected(f"no {ticker} position to sell", code="no_position")
        qty = plain(position.qty)
    amount = rules.check_notional(notional.replace(",", "").replace("$", "").strip()) if notional.strip() else None
    shares = rules.check_qty(qty.replace(",", "").strip()) if qty.strip() else None
    last = deps.prices.last(ticker)
    if last is None:
        raise Rejected(f"{ticker} is not priced by the market data feed, so it cannot be traded now", code="no_price")
    price = rules.to_price(last.last)
    request = OrderRequest(symbol=ticker, side=side, notional=amount, qty=shares)  # type: ignore[arg-type]  # side: buy or sell (the tool's schema); exactly one amount
    order_rules.check_order(request, position if side == "sell" else None, last)
    cost = amount if amount is not None else rules.cents(shares * price)  # type: ignore[operator]  # no notional means shares is set (checked above)
    if side == "buy" and cost > account.buying_power:
        raise Rejected(
            f"insufficient buying power: the order needs about ${money(cost)}, "
            f"${money(account.buying_power)} is available",
            code="insufficient_funds",
        )
    estimated_qty = shares if shares is not None else rules.shares_down(amount / price)  # type: ignore[operator]  # no shares means amount is set (checked above)
    return PendingOrder(
        symbol=ticker,
        side=side,  # type: ignore[arg-type]  # buy or sell: the tool's schema allows nothing else
        account_id=account_id,
        notional=None if amount is None else money(amount),
        qty=None if shares is None else plain(shares),
        estimated_price=plain(price),
        estimated_qty=plain(estimated_qty),
        market_open=deps.clock.is_open(),
    )


def _prepare(deps: AgentDeps, account_id: str, side: str, symbol: str, notional: str, qty: str) -> dict[str, Any]:
    try:
        pending = check(deps, account_id, side, symbol, notional, qty)
    except BrokerageError as exc:
        return {"status": "refused", "error": exc.message, "code": exc.code}
    return {"status": AWAITING, "order": as_data(pending)}


@agent_tool(AGENT)
def buy(deps: AgentDeps, account_id: str, symbol: str, notional: str = "", qty: str = "") -> dict[str, Any]:
    """Prepare a market buy for the person to confirm: `notional` dollars (e.g. "1500") or `qty` shares
    (e.g. "10"), exactly one. Nothing is placed until the person confirms."""
    return _prepare(deps, account_id, "buy", symbol, notional, qty)


@agent_tool(AGENT)
def sell(deps: AgentDeps, account_id: str, symbol: str, notional: str = "", qty: str = "") -> dict[str, Any]:
    """Prepare a market sell for the person to confirm: `notional` dollars or `qty` shares ("all" sells the
    whole position), exactly one. Nothing is placed until the person confirms."""
    return _prepare(deps, account_id, "sell", symbol, notional, qty)


@agent_tool(AGENT)
def rebalance_orders(deps: AgentDeps, account_id: str, target: str = "") -> dict[str, Any]:
    """Carry out a rebalance toward `target` ("equal_weight" default, "conservative", "balanced",
    "aggressive"): its trades become orders shown to the person one at a time, sells first, each
    placed only if confirmed (cancel skips one)."""
    plan = rebalance_plan(deps, account_id, target)
    if "error" in plan:
        return {"status": "refused", "error": plan["error"]}
    orders = [{"side": t["side"], "symbol": t["symbol"], "notional": t["notional"]} for t in plan["trades"]]
    return {"status": PLANNED if orders else "nothing_to_do", "target": plan["target"], "orders": orders}
