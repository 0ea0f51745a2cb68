"""A message cut into clauses, each read for at most one analyst, trade or portfolio intent.

A clause naming only a company borrows its neighbour's intent ("Apple, Microsoft and Google
prices"); a clause with an intent but no company borrows the previous clause's companies ("... and
how has it done?"). The route and tool calls are assembled from these clauses by `agents.intents`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents import intent_words as kw
from agents.intent_amounts import Amount, read_amount
from agents.phrases import Dates, extract_dates, words_to_digits
from agents.symbols import SymbolResolver


@dataclass(slots=True)
class Clause:
    text: str
    symbols: list[str]
    has_date: bool
    advice: bool = False
    trade: str = ""  # "buy" | "sell"
    analyst: str = ""  # an analyst tool
    analyst_strong: bool = False
    portfolio: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    holding: bool = False
    amount: Amount = field(default_factory=Amount)
    unknown: str = ""

    @property
    def has_intent(self) -> bool:
        return bool(self.advice or self.trade or self.analyst_strong or self.portfolio or self.holding)


def _portfolio_intents(text: str, dates: Dates, has_symbols: bool) -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []
    activity = kw.ACTIVITY.search(text) and not (
        has_symbols and re.search(r"\bhistory\b", text) and not re.search(r"\bmy\b", text)
    )
    if activity:
        trades, cash = bool(kw.ACTIVITY_TRADES.search(text)), bool(kw.ACTIVITY_CASH.search(text))
        kind = "trades" if trades and not cash else "cash" if cash and not trades else ""
        found.append(("account_activity", {"kind": kind} if kind else {}))
    elif kw.CASH.search(text):
        found.append(("cash_available", {}))
    target = next((name for name, rx in kw.TARGETS if rx.search(text)), "")
    wants_profile = target and re.search(
        rf"\b(?:an?|the|my)\s+{target.split('_')[0]}\w*\s+(?:allocation|mix|portfolio|profile)\b", text
    )
    if (
        kw.REBALANCE.search(text)
        or wants_profile
        or (target and kw.TARGET_CHANGE.search(text) and kw.PORTFOLIO.search(text))
    ):
        found.append(("rebalance_plan", {"target": target} if target else {}))
    if kw.DIVERSIFY.search(text):
        found.append(("diversification", {}))
    if (kw.RISK.search(text) and not (has_symbols and not kw.MINE.search(text))) or re.search(
        r"\btoo (?:aggressive|conservative)\b", text
    ):
        found.append(("risk_metrics", {"period": dates.period} if dates.period else {}))
    mine = kw.PORTFOLIO.search(text) and not (has_symbols and not kw.MINE.search(text))
    if not found and mine and dates.period and kw.PERF.search(text):
        found.append(("risk_metrics", {"period": dates.period}))  # "my portfolio's return over the past year"
    if not found and mine:
        found.append(("get_portfolio", {}))  # "Apple's market value" is not the person's portfolio
    return found


def _analyst(text: str, has_symbols: bool, has_date: bool) -> tuple[str, bool]:
    """(tool, strong): strong keywords ask about a company even when none is named."""
    if has_date or kw.PERF.search(text) or (has_symbols and kw.RISK.search(text) and not kw.MINE.search(text)):
        return "stock_performance", True
    if kw.QUOTE.search(text):
        return "get_quote", True
    if kw.PROFILE.search(text):
        return "company_profile", True
    if has_symbols and kw.QUOTE_WEAK.search(text):
        return "get_quote", False
    if has_symbols and kw.PROFILE_WEAK.search(text):
        return "company_profile", False
    return "", False


def _read_clause(text: str, symbols: list[str], dates: Dates) -> Clause:
    has_date = "§t" in text
    clause = Clause(text=text, symbols=symbols, has_date=has_date)
    past = bool(kw.PAST_TRADE.search(text))
    sell, buy = kw.SELL.search(text), kw.BUY.search(text)
    side = "sell" if sell and (not buy or sell.start() < buy.start()) else "buy" if buy else ""
    clause.advice = bool(kw.ADVICE.search(text)) and not past
    clause.portfolio = _portfolio_intents(text, dates, bool(symbols))
    activity = any(tool == "account_activity" for tool, _ in clause.portfolio)
    if side and not clause.advice and not past and not activity:
        if side == "buy" and buy and buy.group() in ("put", "add", "adding", "order", "invest", "investing"):
            # "add"/"put"/"invest" are orders only with an amount or a company ("add $500 to Apple").
            amount = read_amount(text, side, bare_is_qty=False)
            if amount or symbols:
                clause.trade = side
        else:
            clause.trade = side
        if clause.trade:
            clause.portfolio = [p for p in clause.portfolio if p[0] != "get_portfolio"]
    if clause.trade:
        clause.amount = read_amount(text, clause.trade)
    elif not clause.advice:
        clause.holding = bool(symbols) and bool(kw.HOLDING.search(text))
        if not clause.holding:
            clause.analyst, clause.analyst_strong = _analyst(text, bool(symbols), has_date)
            if clause.analyst and not symbols and (clause.portfolio or re.search(r"\byou(?:rself)?\b", text)):
                clause.analyst, clause.analyst_strong = "", False  # "my portfolio's performance", "about yourself"
    if not symbols and (clause.trade or clause.analyst_strong):
        m = kw.CANDIDATE.search(text)
        if m and m.group("name") not in kw.NOT_A_NAME and not m.group("name").isdigit():
            clause.unknown = m.group("name")
    return clause


@dataclass(slots=True)
class Message:
    text: str  # lower case, companies masked as §A, §B..., dates as §t, number words as digits
    symbols: list[str]  # by mask letter
    dates: Dates

    @classmethod
    def read(cls, text: str, resolver: SymbolResolver) -> Message:
        pieces: list[str] = []
        symbols: list[str] = []
        cursor = 0
        for mention in resolver.find(text)[:26]:
            pieces.append(text[cursor : mention.start].lower())
            pieces.append(f" §{chr(65 + len(symbols))} ")
            symbols.append(mention.symbol)
            cursor = mention.end
        pieces.append(text[cursor:].lower())
        masked = re.sub(r"[’‘`]", "'", "".join(pieces))
        masked = re.sub(r"[“”\"]", " ", masked)
        masked = words_to_digits(re.sub(r"\s+", " ", masked).strip())
        masked, dates = extract_dates(masked)
        return cls(re.sub(r"\s+", " ", masked).strip(), symbols, dates)

    def clause_symbols(self, text: str) -> list[str]:
        return list(dict.fromkeys(self.symbols[ord(c) - 65] for c in kw.SYMBOL_MARK.findall(text)))


def read_clauses(message: Message) -> list[Clause]:
    """The message's clauses, each with the intent and companies it borrowed from its neighbours."""
    parts = [p for p in kw.SPLIT.split(message.text) if p and p.strip()]
    clauses = [_read_clause(p, message.clause_symbols(p), message.dates) for p in parts]
    # A clause naming only companies borrows the nearest intent: "Apple, Microsoft and Google prices".
    for i, clause in enumerate(clauses):
        if clause.symbols and not clause.has_intent and not clause.analyst:
            donors = [c for c in clauses[:i][::-1] if c.has_intent] + [c for c in clauses[i + 1 :] if c.has_intent]
            if donors:
                donor = donors[0]
                clause.advice, clause.trade, clause.holding = donor.advice, donor.trade, donor.holding
                clause.analyst, clause.analyst_strong = donor.analyst, donor.analyst_strong
                if clause.trade and not clause.amount:
                    clause.amount = read_amount(clause.text, clause.trade)
                    if not clause.amount:
                        clause.amount = donor.amount
                if clause.has_date and clause.analyst:
                    clause.analyst = "stock_performance"
    # A clause with an intent but no company borrows the previous clause's: "... and how has it done?"
    previous: list[str] = []
    for clause in clauses:
        if clause.symbols:
            previous = clause.symbols
        elif previous and (clause.trade or clause.advice or (clause.analyst and not clause.portfolio)):
            clause.symbols, clause.unknown = previous, ""
    return clauses

