"""How the offline model words tool results: plain sentences built only from the figures the tools returned.

Every number here is copied from a tool result, never computed, so the offline answers obey the same
rule as a real model is told to: numbers from code, words from the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Result = dict[str, Any]


def usd(value: str | None) -> str:
    """A decimal string as dollars: "-0.77" -> "-$0.77", "49559.23" -> "$49,559.23" (digits unchanged)."""
    if value is None:
        return "n/a"
    sign, digits = ("-", value[1:]) if value.startswith("-") else ("", value)
    whole, dot, cents = digits.partition(".")
    return f"{sign}${int(whole):,}{dot}{cents}"


def _signed(value: str | None, suffix: str = "%") -> str:
    if value is None:
        return "n/a"
    return f"+{value}{suffix}" if not value.startswith("-") else f"{value}{suffix}"


def _quote(r: Result) -> str:
    change = (
        f", {_signed(r['day_change'], '')} ({_signed(r['day_change_pct'])}) on the day"
        if r.get("day_change") is not None else ""
    )
    return f"{r['symbol']} is at {usd(r['price'])}{change}. Source: {r['source_note']} (session {r['session']})."


def _profile(r: Result) -> str:
    parts = [f"{r['name']} ({r['symbol']})"]
    if r.get("sector"):
        parts.append(f"sector: {r['sector']}")
    if r.get("industry"):
        parts.append(f"industry: {r['industry']}")
    if r.get("country"):
        parts.append(f"country: {r['country']}")
    text = "; ".join(parts) + "."
    if r.get("description"):
        text += f" Description on file: \"{r['description'][:600]}\""
    else:
        text += " No company description is available offline."
    if r.get("stale"):
        text += " (Live data was unavailable; this is the stored profile.)"
    return text + f" (Source: {r['source']}.)"


def _performance(r: Result) -> str:
    text = (
        f"{r['symbol']} from {r['start']} to {r['end']}: total return {_signed(r['total_return_pct'])} "
        f"({usd(r['start_price'])} -> {usd(r['end_price'])}), annualised volatility {r['annualized_volatility_pct']}%, "
        f"max drawdown {r['max_drawdown_pct']}%."
    )
    market = r.get("market") or {}
    if market.get("total_return_pct") is not None:
        text += (
            f" The market proxy, the {market['label']}, returned {_signed(market['total_return_pct'])} "
            f"(volatility {market['annualized_volatility_pct']}%, max drawdown {market['max_drawdown_pct']}%), "
            f"so {r['symbol']} was {_signed(r['excess_return_pct'], ' points')} against it."
        )
    return text + f" Prices: {r['history_source']}."


def _portfolio(r: Result) -> str:
    if not r["holdings"]:
        return f"The account holds no positions; cash is {usd(r['cash'])}."
    lines = [f"Total value {usd(r['total_value'])}: {usd(r['invested'])} invested and {usd(r['cash'])} cash."]
    lines += [
        f"- {h['symbol']}: {h['qty']} shares, {usd(h['market_value'])} ({h['weight_pct']}% of holdings, "
        f"P/L {usd(h['unrealized_pl'])}), {h['sector']}"
        for h in r["holdings"]
    ]
    lines.append("By sector: " + ", ".join(f"{s['sector']} {s['weight_pct']}%" for s in r["sectors"]) + ".")
    return "\n".join(lines)


def _diversification(r: Result) -> str:
    return (
        f"Diversification score {r['score']}/10: {r['positions']} positions across {r['sectors']} sector(s); "
        f"the largest, {r['largest_position']}, is {r['largest_weight_pct']}% of the holdings; "
        f"HHI {r['hhi']} (like {r['effective_holdings']} equal positions)."
    )


def _risk(r: Result) -> str:
    beta = f", beta {r['beta']} against the {r['market']}" if r.get("beta") is not None else ""
    text = (
        f"From {r['start']} to {r['end']} ({r['method']}): return {_signed(r['total_return_pct'])}, "
        f"annualised volatility {r['annualized_volatility_pct']}%{beta}, Sharpe ratio {r['sharpe']} "
        f"(risk-free {r['risk_free_rate_pct']}%), max drawdown {r['max_drawdown_pct']}%."
    )
    if r.get("window_note"):
        text += f" The window is shorter than asked: {r['window_note']}."
    if r.get("left_out"):
        text += " Left out for lack of price history: " + ", ".join(r["left_out"]) + "."
    return text


def _rebalance(r: Result) -> str:
    if not r["trades"]:
        return f"The holdings already match the {r['target']} target: no trade is needed."
    lines = [f"To move toward {r['target'].replace('_', ' ')}:"]
    lines += [f"- {t['side']} {usd(t['notional'])} of {t['symbol']}" for t in r["trades"]]
    lines.append(f"Cash afterwards: {usd(r['cash_after'])}. Say \"execute the rebalance\" to place these as "
                 "orders, each shown for your confirmation.")
    lines += r.get("notes") or []
    return "\n".join(lines)


def _activity(r: Result) -> str:
    if not r["activities"]:
        return "There is no activity of that kind on the account yet."
    what = {"all": "activities", "trades": "trades", "cash": "deposits and withdrawals"}.get(r["kind"], "activities")
    lines = [f"{r['count']} {what} (newest first):"]
    for a in r["activities"][:10]:
        if a["type"] == "FILL":
            lines.append(f"- {a['date'][:10]}: {a['side']} {a['qty']} {a['symbol']} at ${a['price']}")
        else:
            lines.append(f"- {a['date'][:10]}: {a['type']} {usd(a['net_amount'])}")
    if r["kind"] in ("all", "trades"):
        lines.append(f"Bought {usd(r['total_bought'])} and sold {usd(r['total_sold'])} in total.")
    return "\n".join(lines)


def _cash(r: Result) -> str:
    return (
        f"Cash {usd(r['cash'])}, of which {usd(r['cash_withdrawable'])} can be withdrawn; "
        f"buying power {usd(r['buying_power'])}."
    )


def _order_prepared(r: Result) -> str:
    if r.get("status") == "awaiting_confirmation":
        return ""  # the confirmation itself shows the order
    return f"I can't prepare that order: {r.get('error')}."


def _rebalance_orders(r: Result) -> str:
    if r.get("status") == "planned":
        return ""  # each order is shown for confirmation
    if r.get("status") == "nothing_to_do":
        return f"The holdings already match the {r['target'].replace('_', ' ')} target: no order is needed."
    return f"I can't rebalance: {r.get('error')}."


def _placed(r: Result) -> str:
    if r.get("status") != "placed":
        return f"The order was not placed: {r.get('error')}."
    o = r["order"]
    amount = f"${o['notional']}" if o.get("notional") else f"{o['qty']} shares"
    return f"Order placed: {o['side']} {amount} of {o['symbol']}, status {o['status']} (order id {o['id']})."


WORDING: dict[str, Callable[[Result], str]] = {
    "get_quote": _quote,
    "company_profile": _profile,
    "stock_performance": _performance,
    "get_portfolio": _portfolio,
    "diversification": _diversification,
    "risk_metrics": _risk,
    "rebalance_plan": _rebalance,
    "account_activity": _activity,
    "cash_available": _cash,
    "buy": _order_prepared,
    "sell": _order_prepared,
    "place_order": _placed,
    "rebalance_orders": _rebalance_orders,
}


def word(tool: str, result: Result) -> str:
    if "error" in result and tool not in ("buy", "sell", "place_order", "rebalance_orders"):
        return f"I couldn't get that: {result['error']}."
    try:
        return WORDING[tool](result)
    except (KeyError, TypeError):  # a result of an unexpected shape is shown as data, not guessed at
        return f"{tool}: {result}"
