"""Which companies a person's message names: tickers, company names, common and former names.

The offline intent model and the agents both need "Apple", "$AAPL", "Big Blue" and "Facebook's"
to land on one tradable symbol, and need "it", "all", "cash" or "now" never to. Names come from a
curated alias table (common and former names the index data lacks) plus the store's or the
offline index's company names with legal suffixes stripped. Generic English words are kept out:
a word-like ticker counts only in upper case or after "$", a one-word company name that is an
English word is left to the curated table, and a name made only of English words ("Best Buy")
counts only when capitalised.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agents.symbol_vocabulary import CURATED, ENGLISH
from brokerage.company_profiles import default_profiles

_TOKEN = re.compile(r"\$?[A-Za-z0-9]+(?:[&.'’][A-Za-z0-9]+)*(?:['’]s?)?|&")
_TICKER_SHAPE = re.compile(r"[A-Z]{1,5}(?:\.[A-Z])?")
_SUFFIX = re.compile(
    r"(?:[\s,]+(?:inc|incorporated|corp|corporation|co|company|companies|plc|ltd|limited|llc|lp|l\.p|"
    r"n\.v|nv|s\.a|sa|se|ag|ab|asa|oyj|spa|s\.p\.a|holdings?|group|class [a-c]|& co|and co)\.?)+$",
    re.IGNORECASE,
)
_MAX_NAME_TOKENS = 6


@dataclass(frozen=True, slots=True)
class Mention:
    """One company named in a message: where (character offsets) and which symbol."""

    start: int
    end: int
    symbol: str


@dataclass(frozen=True, slots=True)
class _Token:
    start: int
    end: int
    raw: str  # without a leading "$"
    dollar: bool

    @property
    def key(self) -> str:
        return self.raw.lower().replace("’", "'")


@dataclass(frozen=True, slots=True)
class _Alias:
    tickers: tuple[str, ...]  # primary first
    capitalised: bool  # the person must capitalise every word ("Best Buy", "Target")
    upper: bool  # the person must write it in capitals (short names like "ABB")


def _tokens(text: str) -> list[_Token]:
    out = []
    for m in _TOKEN.finditer(text):
        raw = m.group()
        dollar = raw.startswith("$")
        out.append(_Token(m.start(), m.end(), raw[1:] if dollar else raw, dollar))
    return out


def _key(name: str) -> str:
    return " ".join(t.key for t in _tokens(name))


def _strip_possessive(key: str) -> str:
    for tail in ("'s", "'"):
        if key.endswith(tail):
            return key[: -len(tail)]
    return key


def usable_name(name: str) -> str:
    """A listed company name as people say it: "The Walt Disney Company" -> "Walt Disney"."""
    name = re.sub(r"\s*\([^)]*\)", "", name)
    name = re.sub(r"^the\s+", "", name, flags=re.IGNORECASE)
    previous = None
    while previous != name:
        previous = name
        name = _SUFFIX.sub("", name).strip(" ,.")
    return name


class SymbolResolver:
    """Finds the symbols a message names, in order of appearance."""

    def __init__(
        self,
        tickers: Iterable[str],
        names: Mapping[str, Iterable[str]],
        preferred: Iterable[str] = (),
        capitalised: Iterable[str] = (),
        upper: Iterable[str] = (),
        casual: Iterable[str] = (),
    ) -> None:
        """`names` maps a name to its tickers, primary first; `capitalised`/`upper` list names the
        person must capitalise / write in capitals for them to count; `casual` lists well-known
        tickers that also count in lower case ("aapl") when they are not English words."""
        self.preferred = frozenset(s.upper() for s in preferred)
        self.tickers = frozenset(t.upper() for t in tickers) | self.preferred
        cap = {_key(n) for n in capitalised}
        up = {_key(n) for n in upper}
        self._names: dict[str, _Alias] = {}
        for name, symbols in names.items():
            key = _key(name)
            if key and key not in self._names:
                self._names[key] = _Alias(tuple(s.upper() for s in symbols), key in cap, key in up)
        self.tickers |= {t for alias in self._names.values() for t in alias.tickers}
        self._first_words = frozenset(key.split()[0] for key in self._names)
        known = self.preferred | {t.upper() for t in casual}
        self._lower_ok = frozenset(
            t for t in known if len(t) >= 3 and t.lower() not in ENGLISH and _TICKER_SHAPE.fullmatch(t)
        )

    def _pick(self, tickers: tuple[str, ...]) -> str:
        return next((t for t in tickers if t in self.preferred), tickers[0])

    def _name_at(self, tokens: list[_Token], i: int) -> tuple[int, str] | None:
        """The longest name starting at token i: (tokens used, symbol)."""
        first = tokens[i].key
        if first not in self._first_words and _strip_possessive(first) not in self._first_words:
            return None
        for n in range(min(_MAX_NAME_TOKENS, len(tokens) - i), 0, -1):
            span = tokens[i : i + n]
            if any(t.dollar for t in span[1:]):
                continue
            keys = [t.key for t in span]
            for last in dict.fromkeys((keys[-1], _strip_possessive(keys[-1]))):
                alias = self._names.get(" ".join([*keys[:-1], last]))
                if alias is None:
                    continue
                if alias.upper and not all(t.raw.isupper() for t in span):
                    continue
                if alias.capitalised and not all(t.raw[0].isupper() or not t.raw[0].isalpha() for t in span):
                    continue
                return n, self._pick(alias.tickers)
        return None

    def _ticker(self, token: _Token) -> str | None:
        raw = _strip_possessive(token.raw.replace("’", "'"))
        symbol = raw.upper()
        if symbol not in self.tickers:
            return None
        if token.dollar:
            return symbol
        if raw.isupper():
            return symbol if raw.lower() not in ENGLISH else None
        return symbol if raw.islower() and symbol in self._lower_ok else None

    def find(self, text: str) -> list[Mention]:
        """Every company mention with its character span, in order (a name repeated is listed again)."""
        tokens = _tokens(text)
        found: list[Mention] = []
        i = 0
        while i < len(tokens):
            named = self._name_at(tokens, i)
            if named is not None:
                n, symbol = named
                found.append(Mention(tokens[i].start, tokens[i + n - 1].end, symbol))
                i += n
                continue
            ticker = self._ticker(tokens[i])
            if ticker is not None:
                found.append(Mention(tokens[i].start, tokens[i].end, ticker))
            i += 1
        return found

    def resolve(self, text: str) -> list[str]:
        """The distinct symbols a message names, in order of first appearance."""
        return list(dict.fromkeys(m.symbol for m in self.find(text)))


def _curated() -> tuple[dict[str, tuple[str, ...]], set[str], set[str]]:
    names: dict[str, tuple[str, ...]] = {}
    capitalised: set[str] = set()
    upper: set[str] = set()
    for line in CURATED.strip().splitlines():
        tickers, aliases = line.split(":", 1)
        for alias in (a.strip() for a in aliases.split(",")):
            names[alias] = tuple(tickers.split())
            if alias.isupper():
                upper.add(alias)
            elif alias[0].isupper():
                capitalised.add(alias)
    return names, capitalised, upper


def from_names(names: Mapping[str, str], tickers: Iterable[str], preferred: Iterable[str] = ()) -> SymbolResolver:
    """A resolver from listed company names (ticker -> name, e.g. the store's profiles) plus the
    curated aliases, which always take precedence over a listed name."""
    table, capitalised, upper = _curated()
    listed: dict[str, list[str]] = {}
    for ticker, name in names.items():
        usable = usable_name(name)
        if usable:
            listed.setdefault(usable, []).append(ticker.upper())
    # "Zorblax" for "Zorblax Industries": a distinctive first word that no other company starts with.
    firsts: dict[str, set[str]] = {}
    for name in listed:
        words = [t.key for t in _tokens(name)]
        if len(words) > 1 and len(words[0]) >= 4 and words[0].isalpha() and words[0] not in ENGLISH:
            firsts.setdefault(words[0], set()).add(name)
    for first, owners_names in firsts.items():
        if len(owners_names) == 1 and first not in listed:
            listed[first] = listed[next(iter(owners_names))]
    curated_keys = {_key(n) for n in table}
    for name, owners in listed.items():
        words = [t.key for t in _tokens(name)]
        if not words or _key(name) in curated_keys:
            continue
        if len(words) == 1 and words[0] in ENGLISH:
            continue  # "Target", "Block", "Next": generic unless curated
        # Primary: a US listing (no exchange suffix) before foreign ones, then alphabetical.
        table[name] = tuple(sorted(set(owners), key=lambda t: ("." in t, t)))
        if all(w in ENGLISH for w in words):
            capitalised.add(name)
        elif len(words) == 1 and len(words[0]) <= 3:
            upper.add(name)
    casual = {t for line in CURATED.strip().splitlines() for t in line.split(":", 1)[0].split()}
    return SymbolResolver([*tickers, *names], table, preferred, capitalised, upper, casual)


@functools.cache
def _default(preferred: frozenset[str]) -> SymbolResolver:
    profiles = default_profiles()
    # An alias profile (FB beside META) repeats its target's name; the target stays the primary.
    names = {p.symbol: p.company_name for p in profiles if "alias_of" not in p.facts}
    return from_names(names, [p.symbol for p in profiles], preferred)


def default_resolver(preferred: Iterable[str] = ("AAPL", "MSFT", "IBM", "GOOG", "FB")) -> SymbolResolver:
    """The resolver over the offline company list; built once per `preferred` set (it takes a while)."""
    return _default(frozenset(s.upper() for s in preferred))
