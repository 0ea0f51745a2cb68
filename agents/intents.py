"""Deterministic reading of a person's message into a route and tool calls (the offline model's brain).

The offline chat model has no language model behind it, so this parser must turn the requests
people actually type ("put two grand into Big Blue", "how has Facebook done since March 2011",
"should I sell IBM?") into the same route and tool calls a capable model would make, and must ask
rather than guess when a trade lacks its stock or its amount. It only ever reads the person's own
message: tool results and documents never pass through it, so text inside them cannot place orders.
It is pure (no I/O, no clock) so the same message always yields the same calls.

How a message is read: company mentions are found and masked, number words become digits, dates
and periods are lifted out, and the rest is cut into clauses ("... and ...", commas) that each carry
at most one analyst, trade or portfolio intent; a clause naming only a company borrows its
neighbour's intent, a clause with an intent but no company borrows the previous clause's companies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import msgspec

from agents.catalogue import AGENTS
from agents.phrases import (
    MULTIPLIER,
    Dates,
    decimal_text,
    extract_dates,
    words_to_digits,
)
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

# ---------------------------------------------------------------- keywords

def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


_CONFIRM = _rx(
    r"(?:(?:yes|yeah|yea|yep|yup|y|sure|ok|okay|k|confirm|confirmed|i confirm|do it|go ahead|go for it|proceed|"
    r"execute|execute it|place it|place the order|submit|submit it|approve|approved|sounds good|absolutely|"
    r"please|pls|correct|that's right|thats right|affirmative|let's do it|lets do it|do that|send it|"
    r"make it so|definitely|of course|right|alright|all right|now|then|it|please do|go|done)\s*)+"
)
_CANCEL = _rx(r"(?:(?:no|nope|nah|cancel|cancel it|stop|never ?mind|forget it|don't|dont|abort|not now|"
              r"thanks|thank you|please)\s*)+")
_GREETING = _rx(r"(?:(?:hi|hello|hey|thanks|thank you|good morning|good evening|yo|howdy)\s*)+")

_ADVICE = _rx(
    r"\bshould (?:i|we)\b|\bis (?:it|now|this|today) (?:a )?(?:good|bad|right|smart|wise|the right)\b|"
    r"\bgood (?:time|idea|moment)\b|\bworth (?:it|buying|selling|adding|holding|getting|investing)\b|"
    r"\bwould you (?:buy|sell|add|hold|invest|recommend)\b|\bdo you (?:think|recommend|suggest)\b|"
    r"\brecommend|\badvi[cs]e|\byour (?:thoughts|opinion|take|view)\b|\bthoughts on\b|\bopinion on\b|"
    r"\bwhat do you think\b|\btime to (?:buy|sell|get)\b|\b(?:good|bad|smart) (?:buy|investment|move|stock)\b|"
    r"\bmakes? sense to\b|\bbetter to (?:buy|sell|hold)\b|\b(?:buy|sell),? or (?:hold|sell|buy)\b|"
    r"\bhold or sell\b|\bwise to\b|\bok to (?:buy|sell)\b|\bis §[A-Z] a buy\b"
)
_BUY = _rx(
    r"\b(?:buy|buying(?! power)|purchase|purchasing|acquire|grab|pick up|get me|invest|investing|put|add|adding|"
    r"accumulate|load up(?: on)?|scoop up|place (?:an |a )?order for|order|go long(?: on)?)\b|"
    r"\b(?:i want|i'd like|i would like|get)\s+(?=\$|\d)"
)
_SELL = _rx(
    r"\b(?:sell|selling|dump|unload|liquidate|get rid of|exit|close(?: out)?|trim|offload|ditch|"
    r"cash out(?: of)?|take profits?(?: on| in)?|short)\b"
)
_PAST_TRADE = _rx(r"\b(?:did|have|has|had) (?:i|we) (?:\w+ )?(?:buy|sell|purchase|trade|bought|sold)\b")

_PERF = _rx(
    r"\bperform|\breturns?\b|\bgain(?:ed|s)?\b|\blos(?:s|t|ses)\b|\bup or down\b|"
    r"\bhow (?:much )?(?:has|have|did) .*?\b(?:done|do|gone|moved|changed|grown|grew|risen|rose|fallen|fell|"
    r"dropped|climbed|fared|been doing)\b|\bcompar|\bvs\.?\b|\bversus\b|\bchart|\btrend|\bhistory\b|"
    r"\bhistorical|\btrack record\b|\bgrowth\b|\bchanged?\b|\bover time\b|\blately\b|\brecently\b|"
    r"\bbeen doing\b|\bsince\b"
)
_QUOTE = _rx(
    r"\bprices?\b|\bquotes?\b|\btrading at\b|\btrades at\b|\bworth\b|\bcosts?\b|\bvalued\b|\bvalue of\b|"
    r"\bmarket (?:cap|value)\b|\bhow much (?:is|are|does|do)\b|\bwhat(?:'s| is) .*\bat\b|\bshare price\b|"
    r"\bstock price\b|\bticker\b"
)
_QUOTE_WEAK = _rx(r"\btoday\b|\bright now\b|\bcurrently\b|\bdoing\b|\bhow(?:'s| is| are)\b|\bmoving\b|\bup\b|\bdown\b")
_PROFILE = _rx(
    r"\btell me (?:about|more)\b|\bwhat (?:does|do) .*\bdo\b|\bwho (?:is|are|owns|runs|makes)\b|\bprofile\b|"
    r"\binfo\b|\binformation\b|\boverview\b|\bbackground\b|\bbusiness\b|\bdescribe\b|\bdescription\b|"
    r"\bsector\b|\bindustry\b|\bheadquarter|\bceo\b|\bfounded\b|\bemployees\b|\blearn about\b|"
    r"\bknow about\b|\bwhat (?:kind|sort|type) of\b|\bexplain\b|\bsummary\b|\bsummari[sz]e\b|"
    r"\bfundamentals\b|\bdetails? (?:on|about|of)\b|\bwhat §[A-Z] (?:does|do|makes|sells)\b|\brundown\b|\blowdown\b"
)
_PROFILE_WEAK = _rx(r"\bwhat(?:'s| is| are)\b|\babout\b|\bwho\b|\bcompany\b")

_CASH = _rx(
    r"\bhow much (?:cash|money|funds)\b|\bbuying power\b|\bcash (?:balance|available|on hand|position|do i|left|"
    r"have i)\b|\bavailable (?:cash|funds|balance|to (?:invest|trade|spend))\b|\b(?:cash|money|funds) "
    r"(?:is |do i have )?(?:available|free|left|uninvested)\b|\buninvested\b|\bidle cash\b|\bspare cash\b|"
    r"\bhow much (?:can|could) i (?:invest|spend|afford|trade|buy)\b|\bmy cash\b|\bspending power\b|"
    r"\bcash do i\b|\bmoney do i have\b|\bsitting in cash\b|\bhow much (?:do|can) i have (?:left|available)\b|"
    r"\bleft to (?:trade|invest|spend)\b|\bto (?:trade|invest) with\b"
)
_ACTIVITY = _rx(
    r"\bactivity\b|\btransactions?\b|\bstatements?\b|\bdeposits?\b|\bdeposited\b|\bwithdrawals?\b|\bwithdrew\b|"
    r"\bwithdrawn\b|\btransfers?\b|\btransferred\b|\bfills?\b|\bfilled\b|\bexecutions?\b|\borders\b|"
    r"\btrades\b|\bpurchases\b|\bbuys\b|\bsales\b|\bbought\b|\bsold\b|\bpurchased\b|\bmy (?:last |recent )?order\b|"
    r"\b(?:account|order|trade|trading|purchase|transaction|deposit|withdrawal|funding) history\b|"
    r"\bfunding\b|\bledger\b|\b(?:did|have) (?:i|we) (?:\w+ )?(?:buy|sell|purchase|trade|bought|sold)\b|"
    r"\bcash (?:movements|flows?|in and out)\b|\bmoney (?:in|out|i put in)\b"
)
_ACTIVITY_TRADES = _rx(r"\btrad|\border|\bfill|\bexecution|\bpurchas|\bbuys?\b|\bbought\b|\bsold\b|\bsell|\bsales\b")
_ACTIVITY_CASH = _rx(r"\bdeposit|\bwithdr|\btransfer|\bcash\b|\bfunding\b|\bmoney\b")
_REBALANCE = _rx(r"\bre-?balanc|\breallocat|\brealign|\btarget (?:allocation|mix|weights?)\b|\bequal[- ]?weight")
# carrying a rebalance out (orders, each confirmed) rather than seeing the plan
_EXECUTE = _rx(
    r"\b(?:execute|place|submit|carry out|go ahead with|go through with|make|do|start|trade|run|perform)\b"
    r".*\b(?:re-?balanc\w*|trades|orders)\b.*|\bre-?balanc\w* (?:it |everything |my \w+ )?for me\b|"
    r"\bre-?balanc\w*\b.*\b(?:and|then) (?:place|execute|submit|make|do) "
    r"(?:the |those |these |all )?(?:trades|orders)\b"
)
_TARGET_CHANGE = _rx(
    r"\b(?:make|shift|move|switch|turn|change|adjust|go|convert|reposition|restructure|split|spread|divide|"
    r"distribute|allocate|weight|put)\b"
)
_TARGETS = (
    (
        "equal_weight",
        _rx(r"\bequal[- ]?weight|\bequally\b|\bevenly\b|\bequal (?:parts|amounts|split|shares)\b|\bsame amount"),
    ),
    (
        "conservative",
        _rx(r"\bconservative|\bsafer\b|\bless risk|\blower risk|\bdefensive|\bcautious|\bless aggressive"),
    ),
    ("balanced", _rx(r"\bbalanced\b|\bmoderate\b|\bmiddle of the road\b|\bin between\b")),
    ("aggressive", _rx(r"\baggressive|\bgrowth\b|\briskier\b|\bmore risk|\bhigher risk|\bmore growth")),
)
_RISK = _rx(
    r"\brisk|\bvolatil|\bsharpe\b|\bbeta\b|\bdraw-?downs?\b|\bvar\b|\bvalue at risk\b|\bstandard deviation\b|"
    r"\bstd dev\b|\bsortino\b|\bhow safe\b|\bdownside\b|\bswings?\b|\bdrops?\b"
)
_DIVERSIFY = _rx(
    r"\bdiversif|\bconcentrat|\bover-?exposed\b|\btoo much (?:in|of|exposure)\b|\bspread out\b|"
    r"\beggs in one basket\b|\boverweight\b|\bsingle stock\b|\bcorrelat|\btoo many\b|\btoo few\b|\bbalanced enough\b"
)
_PORTFOLIO_WORDS = _rx(
    r"\bportfolio|\bholdings?\b|\bpositions?\b|\bwhat do i (?:\w+ )?(?:own|have|hold)\b|\bwhat i (?:own|hold)\b|"
    r"\bmy (?:stocks|shares|investments|account|assets|equities|money)\b|\ballocation\b|\bbreakdown\b|"
    r"\bnet worth\b|\bhow am i doing\b|\bhow are my\b|\bwhat(?:'s| is) in my\b|\binvested in\b|"
    r"\btotal value\b|\baccount value\b|\bbalance\b|\bexposure\b|\bwhat stocks\b|\bstake\b|\bby sector\b|"
    r"\bsector (?:breakdown|exposure|split|weights?|allocation|mix)\b|"
    r"\bgains? and loss|\bp&l\b|\bpnl\b"
)
_HOLDING = _rx(
    r"\bmy §[A-Z]|\bdo i (?:own|have|hold)\b|\bi (?:own|hold)\b|"
    r"\bhow (?:much|many) .*\b(?:do|did) i (?:own|have|hold)\b|"
    r"§[A-Z]\s+(?:position|holding|stake|shares i)\b|\bexposure to\b|\bin my (?:portfolio|account)\b"
)
# A stock-level "how risky is Tesla" has no portfolio tool; its history is the closest answer.
_MINE = _rx(r"\bmy\b|\bportfolio\b|\bi\b|\bme\b")

_ALL = _rx(
    r"\ball\b|\beverything\b|\bentire\b|\bwhole\b|\bevery share\b|\bfull position\b|\bcompletely\b|"
    r"\bout of\b|\bget rid of\b|\bliquidate\b|\bclose(?: out)?\b"
)
_FRACTION = _rx(r"\bhalf\b|\bquarter\b|\d\s*%|\bpercent\b|\bthird\b")
_NEGATIVE = _rx(r"(?:^|[^\w§])-\s*\$?\s*\d|\$\s*-\s*\d|\bnegative\b|\bminus\b")
_NUM = r"(?P<n>\d[\d,]*(?:\.\d+)?|\.\d+)"
_MONEY = (
    _rx(rf"\$\s*{_NUM}\s*(?P<mult>k|grand|thousand|hundred|mm|mil|million|m|bn|b|billion)?\b"),
    _rx(rf"{_NUM}\s*(?P<mult>k|grand|thousand|hundred|mm|mil|million|bn|billion)?\s*(?:dollars?|bucks|usd)\b"),
    _rx(rf"(?<![\d.]){_NUM}\s*(?P<mult>k|grand|thousand|mm|mil|million|bn|billion)\b(?!\s*(?:§[A-Z]\s*)?shares?)"),
)
_QTY = _rx(
    rf"(?<![\d.]){_NUM}\s*(?P<mult>k|thousand|hundred)?\s*(?:§[A-Z]\s*)?(?:more\s+)?(?:shares?|stocks?|units?)\b"
)
_BARE = _rx(r"(?<![\w.§$])(?P<n>\d[\d,]*(?:\.\d+)?)(?![\w.%])")
_SYMBOL_MARK = _rx(r"§([A-Z])")

# Words after "buy"/"of"/"about" that are not a company's name.
_NOT_A_NAME = frozenset(
    """some more stuff something things thing anything everything stock stocks shares share it that this them
    these those the my a an any one ones your you yourself company companies market markets of in into on
    for worth dollars bucks me us money cash please now today again too also just right more few lot bit
    what which how why when where who there here their its all funds fund etf etfs portfolio position
    positions holdings good great best other another new different whatever anyone someone up in-between""".split()
)
_CANDIDATE = _rx(
    r"\b(?:of|in|into|on|about|buy|sell|purchase|for|price|quote|is|doing)\s+(?:(?:some|more|the|my|a|an|"
    r"shares|share|stock|worth|of|in|company|called)\s+)*(?P<name>[a-z][\w&'.-]*)"
)


# ---------------------------------------------------------------- clauses

_SPLIT = _rx(
    r"\s*(?:[?!;]+|\.(?=\s|$)|,(?!\d)\s*(?:and|then|also|plus)?\b|\s(?:and then|and also|and|also|plus|then|"
    r"as well as|&|but)\s)\s*"
)


@dataclass(slots=True)
class _Amount:
    notional: str = ""
    qty: str = ""
    problem: str = ""  # why the amount cannot be used, said back to the person

    def args(self) -> dict[str, str]:
        return {"notional": self.notional} if self.notional else {"qty": self.qty} if self.qty else {}

    def __bool__(self) -> bool:
        return bool(self.notional or self.qty or self.problem)


def _amount(text: str, side: str, bare_is_qty: bool = True) -> _Amount:
    """The dollars or shares of a trade clause; a bare number is shares ("buy 10 AAPL")."""
    if _NEGATIVE.search(text):
        return _Amount(problem="An amount has to be more than zero.")
    hits: list[tuple[int, str, str]] = []
    for rx in _MONEY:
        for m in rx.finditer(text):
            hits.append((m.start(), "notional", m.group("n") + "|" + (m.group("mult") or "")))
    for m in _QTY.finditer(text):
        if not any(h[0] <= m.start() < h[0] + 1 for h in hits):
            hits.append((m.start(), "qty", m.group("n") + "|" + (m.group("mult") or "")))
    if hits:
        _, kind, raw = min(hits)
        digits, mult = raw.split("|")
        value = decimal_text(digits, MULTIPLIER.get(mult, 1))
        if value is None:
            return _Amount(problem="An amount has to be more than zero.")
        return _Amount(notional=value) if kind == "notional" else _Amount(qty=value)
    if side == "sell" and _ALL.search(text):
        return _Amount(qty="all")
    if _FRACTION.search(text):
        return _Amount(
            problem="Please say a dollar amount or a number of shares (fractions and percentages aren't supported)."
        )
    bare = _BARE.search(text)
    if bare and bare_is_qty:
        value = decimal_text(bare.group("n"))
        return _Amount(qty=value) if value else _Amount(problem="An amount has to be more than zero.")
    return _Amount()


@dataclass(slots=True)
class _Clause:
    text: str
    symbols: list[str]
    has_date: bool
    advice: bool = False
    trade: str = ""  # "buy" | "sell"
    analyst: str = ""  # an analyst tool
    analyst_strong: bool = False
    portfolio: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    holding: bool = False
    amount: _Amount = field(default_factory=_Amount)
    unknown: str = ""

    @property
    def has_intent(self) -> bool:
        return bool(self.advice or self.trade or self.analyst_strong or self.portfolio or self.holding)


def _portfolio_intents(text: str, dates: Dates, has_symbols: bool) -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []
    activity = _ACTIVITY.search(text) and not (
        has_symbols and re.search(r"\bhistory\b", text) and not re.search(r"\bmy\b", text)
    )
    if activity:
        trades, cash = bool(_ACTIVITY_TRADES.search(text)), bool(_ACTIVITY_CASH.search(text))
        kind = "trades" if trades and not cash else "cash" if cash and not trades else ""
        found.append(("account_activity", {"kind": kind} if kind else {}))
    elif _CASH.search(text):
        found.append(("cash_available", {}))
    target = next((name for name, rx in _TARGETS if rx.search(text)), "")
    wants_profile = target and re.search(
        rf"\b(?:an?|the|my)\s+{target.split('_')[0]}\w*\s+(?:allocation|mix|portfolio|profile)\b", text
    )
    changes_portfolio = target and _TARGET_CHANGE.search(text) and _PORTFOLIO_WORDS.search(text)
    if _REBALANCE.search(text) or wants_profile or changes_portfolio:
        found.append(("rebalance_plan", {"target": target} if target else {}))
    if _DIVERSIFY.search(text):
        found.append(("diversification", {}))
    if (_RISK.search(text) and not (has_symbols and not _MINE.search(text))) or re.search(
        r"\btoo (?:aggressive|conservative)\b", text
    ):
        found.append(("risk_metrics", {"period": dates.period} if dates.period else {}))
    mine = _PORTFOLIO_WORDS.search(text) and not (has_symbols and not _MINE.search(text))
    if not found and mine and dates.period and _PERF.search(text):
        found.append(("risk_metrics", {"period": dates.period}))  # "my portfolio's return over the past year"
    if not found and mine:
        found.append(("get_portfolio", {}))  # "Apple's market value" is not the person's portfolio
    return found


def _analyst(text: str, has_symbols: bool, has_date: bool) -> tuple[str, bool]:
    """(tool, strong): strong keywords ask about a company even when none is named."""
    if has_date or _PERF.search(text) or (has_symbols and _RISK.search(text) and not _MINE.search(text)):
        return "stock_performance", True
    if _QUOTE.search(text):
        return "get_quote", True
    if _PROFILE.search(text):
        return "company_profile", True
    if has_symbols and _QUOTE_WEAK.search(text):
        return "get_quote", False
    if has_symbols and _PROFILE_WEAK.search(text):
        return "company_profile", False
    return "", False


def _read_clause(text: str, symbols: list[str], dates: Dates) -> _Clause:
    has_date = "§t" in text
    clause = _Clause(text=text, symbols=symbols, has_date=has_date)
    past = bool(_PAST_TRADE.search(text))
    sell, buy = _SELL.search(text), _BUY.search(text)
    side = "sell" if sell and (not buy or sell.start() < buy.start()) else "buy" if buy else ""
    clause.advice = bool(_ADVICE.search(text)) and not past
    clause.portfolio = _portfolio_intents(text, dates, bool(symbols))
    activity = any(tool == "account_activity" for tool, _ in clause.portfolio)
    if side and not clause.advice and not past and not activity:
        if side == "buy" and buy and buy.group() in ("put", "add", "adding", "order", "invest", "investing"):
            # "add"/"put"/"invest" are orders only with an amount or a company ("add $500 to Apple").
            amount = _amount(text, side, bare_is_qty=False)
            if amount or symbols:
                clause.trade = side
        else:
            clause.trade = side
        if clause.trade:
            clause.portfolio = [p for p in clause.portfolio if p[0] != "get_portfolio"]
    if clause.trade:
        clause.amount = _amount(text, clause.trade)
    elif not clause.advice:
        clause.holding = bool(symbols) and bool(_HOLDING.search(text))
        if not clause.holding:
            clause.analyst, clause.analyst_strong = _analyst(text, bool(symbols), has_date)
            if clause.analyst and not symbols and (clause.portfolio or re.search(r"\byou(?:rself)?\b", text)):
                clause.analyst, clause.analyst_strong = "", False  # "my portfolio's performance", "about yourself"
    if not symbols and (clause.trade or clause.analyst_strong):
        m = _CANDIDATE.search(text)
        if m and m.group("name") not in _NOT_A_NAME and not m.group("name").isdigit():
            clause.unknown = m.group("name")
    return clause


@dataclass(slots=True)
class _Message:
    text: str  # lower case, companies masked as §A, §B..., dates as §t, number words as digits
    symbols: list[str]  # by mask letter
    dates: Dates
    original: str

    @classmethod
    def read(cls, text: str, resolver: SymbolResolver) -> _Message:
        pieces: list[str] = []
        cursor = 0
        symbols: list[str] = []
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
        return cls(re.sub(r"\s+", " ", masked).strip(), symbols, dates, text)

    def clause_symbols(self, text: str) -> list[str]:
        return list(dict.fromkeys(self.symbols[ord(c) - 65] for c in _SYMBOL_MARK.findall(text)))


def _ask(text: str, pending: dict[str, str] | None = None) -> Parsed:
    return Parsed(agents=[], calls=[], ask=text, pending=pending or {})


def _which_stock(tool: str, unknown: str, amount: _Amount) -> str:
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


def _clauses(message: _Message) -> list[_Clause]:
    parts = [p for p in _SPLIT.split(message.text) if p and p.strip()]
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
                    clause.amount = _amount(clause.text, clause.trade)
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


def _understand(message: _Message) -> tuple[Parsed, bool]:
    """The fresh reading of a message, and whether it states a request of its own."""
    if _REBALANCE.search(message.text) and _EXECUTE.search(message.text):
        # one request, whatever its "and"s: carry out a rebalance, each order confirmed
        target = next((name for name, rx in _TARGETS if rx.search(message.text)), "")
        return _assemble([_call("rebalance_orders", {"target": target})]), True
    clauses = _clauses(message)
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
            elif not clause.portfolio and (_BUY.search(clause.text) or _SELL.search(clause.text)):
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
                asks.append((_which_stock(clause.analyst, clause.unknown, _Amount()), pending))
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


def _follow_up(message: _Message, pending: dict[str, str]) -> Parsed | None:
    """Completes a pending request from a message that adds only a company and/or an amount."""
    tool = pending.get("tool", "")
    symbols = message.clause_symbols(message.text)
    if tool in ("buy", "sell"):
        symbol = symbols[0] if symbols else pending.get("symbol", "")
        amount = _amount(message.text, tool, bare_is_qty=False)
        if not amount and _BARE.search(message.text) and symbol:
            n = _BARE.search(message.text).group("n")  # type: ignore[union-attr]  # it matched just above
            return _ask(f"Did you mean ${n} or {n} shares?", {"tool": tool, "symbol": symbol})
        if not amount:
            amount = _Amount(notional=pending.get("notional", ""), qty=pending.get("qty", ""))
        if not symbols and not (amount.notional or amount.qty) and not amount.problem:
            return None
        if amount.problem:
            return _ask(amount.problem, {"tool": tool, **({"symbol": symbol} if symbol else {})})
        if not symbol:
            words = [w for w in re.findall(r"[a-z][\w&'.-]*", message.text) if w not in _NOT_A_NAME]
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
    message = _Message.read(text, resolver)
    words = " ".join(re.sub(r"[^\w'&§ ]+", " ", message.text).split())
    if not words:
        return _ask(HELP)
    if _CONFIRM.fullmatch(words):
        return _ask(CONFIRM_BY_BUTTON, pending)
    if _CANCEL.fullmatch(words) and not _GREETING.fullmatch(words):
        return _ask(CANCELLED)
    fresh, has_intent = _understand(message)
    if pending and not has_intent:
        followed = _follow_up(message, pending)
        if followed is not None:
            return followed
    return fresh
