"""Offline default company profiles from the `pytickersymbols` package, loaded into the store once.

The package ships index constituents (S&P 500, NASDAQ 100, DAX, ...) with names, industries, ISINs,
country and facts scraped from Wikipedia. It has no company description and no GICS sector, so
those stay empty and every profile says so in `facts["data_note"]` rather than guessing. Production
fills the same `company_profiles` table from Financial Modeling Prep instead (`clera profiles collect`,
`brokerage/profile_collector.py`); this loader then does nothing, because it only runs on an empty table.
Each company's first industry label fills the seed's `industry` column; all of them stay in `facts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from pytickersymbols import PyTickerSymbols

from brokerage.store import CompanyProfile, Store

SOURCE = "pytickersymbols"
DATA_NOTE = (
    "Offline index data (pytickersymbols, facts from Wikipedia): no company description and no GICS "
    "sector are available offline; industries are Wikipedia's labels."
)
# Symbol used by the price data -> symbol used by the index data. The bundled prices know Meta
# Platforms by its pre-2022 ticker FB; both tickers resolve to the same company.
SYMBOL_ALIASES: dict[str, str] = {"FB": "META"}


def _us_tickers(stock: dict[str, Any]) -> list[str]:
    """Exchange-listed US tickers of a company (e.g. GOOG beside the primary GOOGL); OTC ADRs left out."""
    tickers = []
    for listing in stock.get("symbols") or []:
        yahoo = (listing.get("yahoo") or "").strip().upper()
        over_the_counter = (listing.get("google") or "").startswith("OTCMKTS:")
        if listing.get("currency") == "USD" and yahoo and "." not in yahoo and not over_the_counter:
            tickers.append(yahoo)
    return tickers


def _facts(stock: dict[str, Any], indices: Iterable[str]) -> dict[str, str]:
    facts = {str(k): str(v).strip() for k, v in (stock.get("metadata") or {}).items() if v not in (None, "")}
    if stock.get("industries"):
        facts["industries"] = ", ".join(stock["industries"])
    listings = [s["google"] for s in stock.get("symbols") or [] if s.get("google")]
    if listings:
        facts["listings"] = ", ".join(listings)
    if indices:
        facts["indices"] = ", ".join(sorted(indices))
    if len(stock.get("isins") or []) > 1:
        facts["isins"] = ", ".join(stock["isins"])
    facts["data_note"] = DATA_NOTE
    return facts


def _profile(symbol: str, stock: dict[str, Any], indices: Iterable[str]) -> CompanyProfile:
    industries = stock.get("industries") or [None]
    return CompanyProfile(
        symbol=symbol,
        company_name=stock["name"],
        industry=industries[0],
        isin=(stock.get("isins") or [None])[0],
        country=stock.get("country"),
        facts=_facts(stock, indices),
        source=SOURCE,
    )


def default_profiles() -> list[CompanyProfile]:
    """One profile per ticker: each company's primary symbol and its US listings, plus the aliases.

    Where two companies claim one ticker, the US listing wins (the product trades US equities).
    """
    data = PyTickerSymbols()
    memberships: dict[str, set[str]] = {}
    for index in data.get_all_indices():
        for stock in data.get_stocks_by_index(index):
            memberships.setdefault(stock["name"], set()).add(index)
    stocks = [s for s in data.get_all_stocks() if s.get("name")]

    owners: dict[str, dict[str, Any]] = {}
    for stock in stocks:  # first pass: US tickers
        for ticker in _us_tickers(stock):
            owners.setdefault(ticker, stock)
    for stock in stocks:  # then primary symbols nobody listed in the US holds
        if stock.get("symbol"):
            owners.setdefault(stock["symbol"].strip().upper(), stock)

    profiles = {t: _profile(t, s, memberships.get(s["name"], ())) for t, s in owners.items()}
    for alias, target in SYMBOL_ALIASES.items():
        if target in profiles and alias not in profiles:
            base = profiles[target]
            profiles[alias] = msgspec.structs.replace(base, symbol=alias, facts={**base.facts, "alias_of": target})
    return sorted(profiles.values(), key=lambda p: p.symbol)


def load_default_company_profiles(store: Store) -> int:
    """Fills an empty profile table on first start; returns how many profiles it wrote (0 if not empty).

    Safe to run from several processes at once: the writes are upserts of identical rows. Never on an
    existing Clera database: its table is the FMP collector's and has no column to say a row is offline.
    """
    if store.layout == "clera" or store.count_company_profiles() > 0:
        return 0
    return store.upsert_company_profiles(default_profiles())
