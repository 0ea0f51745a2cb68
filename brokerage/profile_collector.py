"""`clera profiles collect`: company profiles from FMP into the store, in batches, resumable.

One symbol at a time through the FMP client (its limiter keeps FMP's per-minute budget, its retries
ride out 429s and 5xx); each batch is written with one upsert, so a killed run loses at most the
batch in flight. A rerun skips every symbol whose FMP profile was stored within the freshness age,
and `--start-from-symbol` starts the list at a symbol as the seed's script did. A row FMP answers
badly costs that symbol only: it is counted as failed with its reason and the run goes on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from brokerage.company_profiles import default_profiles
from brokerage.errors import BrokerageError
from brokerage.fmp import FmpClient, FmpError
from brokerage.fmp_rows import RowError, profile_from_fmp
from brokerage.store import CompanyProfile, Store
from engine.config import Settings

Outcome = str  # once per symbol: "skipped" (fresh in the store), "fetched" (stored with its batch) or "failed"


class CollectSummary(msgspec.Struct, kw_only=True):
    total: int
    stored: int = 0
    skipped: int = 0
    failed: dict[str, str] = {}
    stopped: str | None = None  # why the run ended early (FMP refused the key)


def parse_symbols(text: str) -> list[str]:
    """Symbols from `--symbols` or a file: separated by commas or whitespace, `#` starts a comment."""
    symbols: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        symbols += [s.strip().upper() for s in line.replace(",", " ").split() if s.strip()]
    return symbols


def symbols_from_file(path: str) -> list[str]:
    return parse_symbols(Path(path).read_text())


def broker_symbols(settings: Settings) -> list[str]:
    """The symbols to collect: Alpaca's tradable US equities when Alpaca is configured, else the
    offline symbol list (the companies the offline profiles know, without their alias tickers)."""
    if settings.broker == "alpaca" and settings.broker_api_key and settings.broker_secret_key:
        # alpaca-py is loaded only when Alpaca is configured (as in brokerage.factory)
        from alpaca.broker import BrokerClient
        from alpaca.trading.enums import AssetClass, AssetStatus
        from alpaca.trading.requests import GetAssetsRequest

        client = BrokerClient(
            settings.broker_api_key, settings.broker_secret_key,
            sandbox=settings.alpaca_environment == "sandbox", url_override=settings.alpaca_broker_url,
        )
        assets = client.get_all_assets(GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY))
        # alpaca-py types its answers `Model | RawData`; with raw_data off (the default) this is the asset list
        return sorted({a.symbol.upper() for a in assets if a.tradable})  # type: ignore[union-attr]
    return [p.symbol for p in default_profiles() if "alias_of" not in p.facts]


def start_from(symbols: list[str], first: str | None) -> list[str]:
    """The list from `first` on (the seed's `--start-from-symbol`); an unknown symbol is an error."""
    if first is None:
        return symbols
    wanted = first.strip().upper()
    if wanted not in symbols:
        raise ValueError(f"--start-from-symbol {wanted} is not among the {len(symbols)} symbols to collect")
    return symbols[symbols.index(wanted):]


def _unique(symbols: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(s.strip().upper() for s in symbols if s.strip()))


def _store_batch(store: Store, profiles: list[CompanyProfile], summary: CollectSummary) -> list[str]:
    """Writes a batch at once; if the database refuses it, row by row, so one bad row fails alone."""
    try:
        store.upsert_company_profiles(profiles)
        return [p.symbol for p in profiles]
    except BrokerageError:
        if len(profiles) == 1:
            raise
    stored = []
    for profile in profiles:
        try:
            store.upsert_company_profiles([profile])
            stored.append(profile.symbol)
        except BrokerageError as exc:
            summary.failed[profile.symbol] = f"the store refused the row: {exc}"
    return stored


def collect_profiles(
    store: Store,
    client: FmpClient,
    symbols: Iterable[str],
    *,
    batch_size: int = 50,
    max_age: dt.timedelta = dt.timedelta(days=7),
    now: dt.datetime | None = None,
    on_symbol: Callable[[str, Outcome], None] = lambda symbol, outcome: None,
) -> CollectSummary:
    if batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    wanted = _unique(symbols)
    summary = CollectSummary(total=len(wanted))
    since = (now or dt.datetime.now(dt.UTC)) - max_age
    fresh = {s for s, at in store.profile_update_times(wanted).items() if at >= since}
    todo = [s for s in wanted if s not in fresh]
    for symbol in wanted:
        if symbol in fresh:
            summary.skipped += 1
            on_symbol(symbol, "skipped")
    for start in range(0, len(todo), batch_size):
        batch: list[CompanyProfile] = []
        for symbol in todo[start : start + batch_size]:
            try:
                profile = profile_from_fmp(client.profile(symbol), symbol)
            except FmpError as exc:
                if exc.fatal:
                    summary.stopped = exc.reason
                    _finish(store, batch, summary)
                    return summary
                profile, summary.failed[symbol] = None, exc.reason
            except RowError as exc:
                profile, summary.failed[symbol] = None, str(exc)
            else:
                if profile is None:
                    summary.failed[symbol] = "FMP has no profile for this symbol"
            if profile is not None:
                batch.append(profile)
            on_symbol(symbol, "failed" if profile is None else "fetched")
        _finish(store, batch, summary)
    return summary


def _finish(store: Store, batch: list[CompanyProfile], summary: CollectSummary) -> None:
    if batch:
        summary.stored += len(_store_batch(store, batch, summary))
