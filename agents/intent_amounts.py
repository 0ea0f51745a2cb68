"""How much a trade clause asks for: dollars, shares, "all", or why the amount cannot be used.

A bare number is shares ("buy 10 AAPL") unless the caller says otherwise (a follow-up "500" is
ambiguous and is asked back); fractions and negative amounts are refused with a sentence the
person can act on rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.phrases import MULTIPLIER, decimal_text

ALL = re.compile(
    r"\ball\b|\beverything\b|\bentire\b|\bwhole\b|\bevery share\b|\bfull position\b|\bcompletely\b|"
    r"\bout of\b|\bget rid of\b|\bliquidate\b|\bclose(?: out)?\b"
)
FRACTION = re.compile(r"\bhalf\b|\bquarter\b|\d\s*%|\bpercent\b|\bthird\b")
NEGATIVE = re.compile(r"(?:^|[^\w§])-\s*\$?\s*\d|\$\s*-\s*\d|\bnegative\b|\bminus\b")
_NUM = r"(?P<n>\d[\d,]*(?:\.\d+)?|\.\d+)"
MONEY = (
    re.compile(rf"\$\s*{_NUM}\s*(?P<mult>k|grand|thousand|hundred|mm|mil|million|m|bn|b|billion)?\b"),
    re.compile(rf"{_NUM}\s*(?P<mult>k|grand|thousand|hundred|mm|mil|million|bn|billion)?\s*(?:dollars?|bucks|usd)\b"),
    re.compile(rf"(?<![\d.]){_NUM}\s*(?P<mult>k|grand|thousand|mm|mil|million|bn|billion)\b(?!\s*(?:§[A-Z]\s*)?shares?)"),
)
QTY = re.compile(
    rf"(?<![\d.]){_NUM}\s*(?P<mult>k|thousand|hundred)?\s*(?:§[A-Z]\s*)?(?:more\s+)?(?:shares?|stocks?|units?)\b"
)
BARE = re.compile(r"(?<![\w.§$])(?P<n>\d[\d,]*(?:\.\d+)?)(?![\w.%])")


@dataclass(slots=True)
class Amount:
    notional: str = ""
    qty: str = ""
    problem: str = ""  # why the amount cannot be used, said back to the person

    def args(self) -> dict[str, str]:
        return {"notional": self.notional} if self.notional else {"qty": self.qty} if self.qty else {}

    def __bool__(self) -> bool:
        return bool(self.notional or self.qty or self.problem)


def read_amount(text: str, side: str, bare_is_qty: bool = True) -> Amount:
    """The dollars or shares of a trade clause; a bare number is shares ("buy 10 AAPL")."""
    if NEGATIVE.search(text):
        return Amount(problem="An amount has to be more than zero.")
    hits: list[tuple[int, str, str]] = []
    for rx in MONEY:
        for m in rx.finditer(text):
            hits.append((m.start(), "notional", m.group("n") + "|" + (m.group("mult") or "")))
    for m in QTY.finditer(text):
        if not any(h[0] <= m.start() < h[0] + 1 for h in hits):
            hits.append((m.start(), "qty", m.group("n") + "|" + (m.group("mult") or "")))
    if hits:
        _, kind, raw = min(hits)
        digits, mult = raw.split("|")
        value = decimal_text(digits, MULTIPLIER.get(mult, 1))
        if value is None:
            return Amount(problem="An amount has to be more than zero.")
        return Amount(notional=value) if kind == "notional" else Amount(qty=value)
    if side == "sell" and ALL.search(text):
        return Amount(qty="all")
    if FRACTION.search(text):
        return Amount(
            problem="Please say a dollar amount or a number of shares (fractions and percentages aren't supported)."
        )
    bare = BARE.search(text)
    if bare and bare_is_qty:
        value = decimal_text(bare.group("n"))
        return Amount(qty=value) if value else Amount(problem="An amount has to be more than zero.")
    return Amount()

