"""Deterministic reading of a person's message into a route and tool calls (the offline model's brain).

The offline chat model has no language model behind it, so this parser must turn the requests
people actually type ("put two grand into Big Blue", "how has Facebook done since March 2011",
"should I sell IBM?") into the same route and tool calls a capable model would make, and must ask
rather than guess when a trade lacks its stock or its amount. It only ever reads the person's own
message: tool results and documents never pass through it, so text inside them cannot place orders.
It is pure (no I/O, no clock) so the same message always yields the same calls.

How a message is read: company mentions are found and masked, number words become digits, dates
and periods are lifted out (`agents.intent_clauses`), and the rest is cut into clauses that each
carry at most one analyst, trade or portfolio intent; this module turns those clauses into tool
calls, or into the question to ask when a trade lacks its stock or its amount.
"""

from __future__ import annotations

import re

import msgspec

from agents import intent_words as kw
from agents.catalogue import AGENTS
from agents.intent_amounts import BARE, Amount, read_amount
from agents.intent_clauses import Message, read_clauses
from agents.symbols import SymbolResolver


class ToolCall(msgspec.Struct, frozen=True):
    agent: str
    tool: str
    args: dict[str, str]  # only the args that are set; "" defaults are omitted


class Parsed(msgspec.Struct):
    agents: list[str]
    calls: list[ToolCall]
    ask: str = ""
    pending: dict[str, str] = {}


HELP = (
    "I can get stock quotes, tell you about a company, show how a stock has performed over a period, "
    "show your portfolio and holdings, check your diversification and risk, suggest a rebalancing "
    "plan, list your account activity, tell you how much cash you have, and buy or sell shares. "
    "What would you like to do?"
)
CONFIRM_BY_BUTTON = (
    "I can't take a confirmation by message: an order is placed only when you press Confirm on the "
    "pending order. Nothing has been placed."
)
CANCELLED = "Okay, I won't do anything with that."

_ANALYST, _PORTFOLIO, _TRADE = AGENTS
_AGENT_OF = {
    "company_profile": _ANALYST,
    "get_quote": _ANALYST,
    "stock_performance": _ANALYST,
    "get_portfolio": _PORTFOLIO,
    "diversification": _PORTFOLIO,
    "risk_metrics": _PORTFOLIO,
    "rebalance_plan": _PORTFOLIO,
    "account_activity": _PORTFOLIO,
    "cash_available": _PORTFOLIO,
    "buy": _TRADE,
    "sell": _TRADE,
    "rebalance_orders": _TRADE,
}
_ANALYST_TOOLS = ("stock_performance", "get_quote", "company_profile")


def _ask(text: str, pending: dict[str, str] | None = None) -> Parsed:
    return Parsed(agents=[], calls=[], ask=text, pending=pending or {})


def _which_stock(tool: str, unknown: str, amount: Amount) -> str:
    if unknown:
        return (
            f"I don't know a company or ticker called '{unknown}'. Which stock did you mean? "
            "A ticker like AAPL or a company name works."
        )
    if tool in ("buy", "sell"):
        if amount:
            return f"Which stock would you like to {tool}?"
        return f"Which stock would you like to {tool}, and how much (a dollar amount or a number of shares)?"
    return "Which company do you mean? A ticker like AAPL or a company name works."


def _how_much(tool: str, symbol: str) -> str:
    if tool == "sell":
        return f"How much {symbol} would you like to sell: a dollar amount, a number of shares, or all of it?"
    return f"How much {symbol} would you like to buy: a dollar amount or a number of shares?"


def _assemble(calls: list[ToolCall], ask: str = "", pending: dict[str, str] | None = None) -> Parsed:
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], ToolCall] = {}
    for c in calls:
        seen.setdefault((c.tool, tuple(sorted(c.args.items()))), c)
    unique = list(seen.values())
    unique.sort(key=lambda c: AGENTS.index(c.agent))
    agents = list(dict.fromkeys(c.agent for c in unique))
    return Parsed(agents=agents, calls=unique, ask=ask, pending=pending or {})


def _call(tool: str, args: dict[str, str]) -> ToolCall:
    return ToolCall(agent=_AGENT_OF[tool], tool=tool, args={k: v for k, v in args.items() if v})


def _understand(message: Message) -> tuple[Parsed, bool]:
    """The fresh reading of a message, and whether it states a request of its own."""
    if kw.REBALANCE.search(message.text) and kw.EXECUTE.search(message.text):
        # one request, whatever its "and"s: carry out a rebalance, each order confirmed
        target = next((name for name, rx in kw.TARGETS if rx.search(message.text)), "")
        return _assemble([_call("rebalance_orders", {"target": target})]), True
    clauses = read_clauses(message)
    calls: list[ToolCall] = []
    asks: list[tuple[str, dict[str, str]]] = []
    perf = message.dates.perf_args()
    for clause in clauses:
        for tool, args in clause.portfolio:
            calls.append(_call(tool, args))
        if clause.advice:
            if clause.symbols:
                calls.extend(_call("stock_performance", {"symbol": s, **perf}) for s in clause.symbols)
                calls.append(_call("get_portfolio", {}))
            elif not clause.portfolio and (kw.BUY.search(clause.text) or kw.SELL.search(clause.text)):
                calls.append(_call("get_portfolio", {}))  # "should I buy more stocks?"
        elif clause.trade:
            amount, tool = clause.amount, clause.trade
            if amount.problem:
                asks.append(
                    (amount.problem, {"tool": tool, **({"symbol": clause.symbols[0]} if clause.symbols else {})})
                )
            elif not clause.symbols:
                asks.append((_which_stock(tool, clause.unknown, amount), {"tool": tool, **amount.args()}))
            elif not amount or (amount.qty == "all" and tool == "buy"):
                asks.append((_how_much(tool, clause.symbols[0]), {"tool": tool, "symbol": clause.symbols[0]}))
            else:
                calls.extend(_call(tool, {"symbol": s, **amount.args()}) for s in clause.symbols)
        elif clause.holding:
            calls.append(_call("get_portfolio", {}))
        elif clause.analyst:
            if clause.symbols:
                for s in clause.symbols:
                    calls.append(
                        _call(clause.analyst, {"symbol": s, **(perf if clause.analyst == "stock_performance" else {})})
                    )
            elif clause.analyst_strong:
                pending = {"tool": clause.analyst, **(perf if clause.analyst == "stock_performance" else {})}
                asks.append((_which_stock(clause.analyst, clause.unknown, Amount()), pending))
    kinds = {c.args.get("kind", "") for c in calls if c.tool == "account_activity"}
    if len(kinds) > 1:  # "trades and deposits": all activity, once
        calls = [c for c in calls if c.tool != "account_activity"] + [_call("account_activity", {})]
    has_intent = any(c.has_intent for c in clauses)
    if not calls and not asks:
        symbols = list(dict.fromkeys(s for c in clauses for s in c.symbols))
        if symbols:  # a company named and nothing asked: its quote
            tool = "stock_performance" if message.dates else "get_quote"
            args = perf if message.dates else {}
            return _assemble([_call(tool, {"symbol": s, **args}) for s in symbols]), False
        return _ask(HELP), has_intent
    if asks:
        text, pending = asks[0]
        return _assemble(calls, text, pending), True
    return _assemble(calls), True


def _follow_up(message: Message, pending: dict[str, str]) -> Parsed | None:
    """Completes a pending request from a message that adds only a company and/or an amount."""
    tool = pending.get("tool", "")
    symbols = message.clause_symbols(message.text)
    if tool in ("buy", "sell"):
        symbol = symbols[0] if symbols else pending.get("symbol", "")
        amount = read_amount(message.text, tool, bare_is_qty=False)
        bare = BARE.search(message.text)
        if not amount and bare and symbol:
            n = bare.group("n")
            return _ask(f"Did you mean ${n} or {n} shares?", {"tool": tool, "symbol": symbol})
        if not amount:
            amount = Amount(notional=pending.get("notional", ""), qty=pending.get("qty", ""))
        if not symbols and not (amount.notional or amount.qty) and not amount.problem:
            return None
        if amount.problem:
            return _ask(amount.problem, {"tool": tool, **({"symbol": symbol} if symbol else {})})
        if not symbol:
            words = [w for w in re.findall(r"[a-z][\w&'.-]*", message.text) if w not in kw.NOT_A_NAME]
            unknown = words[0] if len(words) == 1 and not symbols and not (amount.notional or amount.qty) else ""
            if not unknown and not (amount.notional or amount.qty):
                return None
            return _ask(_which_stock(tool, unknown, amount), {"tool": tool, **amount.args()})
        if not amount or (amount.qty == "all" and tool == "buy"):
            return _ask(_how_much(tool, symbol), {"tool": tool, "symbol": symbol})
        return _assemble([_call(tool, {"symbol": symbol, **amount.args()})])
    if tool in _ANALYST_TOOLS and symbols:
        args = {k: v for k, v in pending.items() if k != "tool"}
        if tool == "stock_performance" and message.dates:
            args = message.dates.perf_args()
        return _assemble([_call(tool, {"symbol": s, **args}) for s in symbols])
    return None


def parse(text: str, resolver: SymbolResolver, pending: dict[str, str] | None = None) -> Parsed:
    """Reads one message from the person (never a tool result) into a route and tool calls.

    `pending` is the partial request from the previous turn's `Parsed.pending`; a message that is a
    request of its own replaces it. Confirmations by message are refused: orders are confirmed by
    the person pressing Confirm, which this parser never stands in for.
    """
    message = Message.read(text, resolver)
    words = " ".join(re.sub(r"[^\w'&§ ]+", " ", message.text).split())
    if not words:
        return _ask(HELP)
    if kw.CONFIRM.fullmatch(words):
        return _ask(CONFIRM_BY_BUTTON, pending)
    if kw.CANCEL.fullmatch(words) and not kw.GREETING.fullmatch(words):
        return _ask(CANCELLED)
    fresh, has_intent = _understand(message)
    if pending and not has_intent:
        followed = _follow_up(message, pending)
        if followed is not None:
            return followed
    return fresh
