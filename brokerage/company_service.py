"""One way to look a company up, for `/api/company/{ticker}` and the agents' company tool alike.

Without an FMP key it is the stored profile. With one, a live profile and quote are fetched on
demand, kept for `CLERA_COMPANY_CACHE_TTL_S` and bounded by the process's FMP limiter (a lookup
waits at most `CLERA_COMPANY_LIVE_WAIT_S` for a request slot, so a spent budget answers at once);
when FMP fails (one try, no retries: someone is waiting), the stored profile is answered with
`stale: true` and the reason.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from collections.abc import Callable

import msgspec

from brokerage.fmp import FmpClient, FmpError
from brokerage.fmp_rows import FmpQuote, RowError, profile_from_fmp, quote_from_fmp
from brokerage.store import CompanyProfile, Store
from engine.config import Settings

CACHE_ENTRIES = 4096  # most symbols kept live at once (least recently used dropped first)


class CompanyLookup(msgspec.Struct, kw_only=True):
    symbol: str
    profile: CompanyProfile | None
    quote: FmpQuote | None = None
    live: bool = False  # profile and quote are FMP's answer of `fetched_at` (now or from the cache)
    stale: bool = False  # FMP was asked and failed: the profile is the stored one
    fetched_at: dt.datetime | None = None
    error: str | None = None  # why FMP failed, when stale


class CompanyService:
    def __init__(
        self,
        store: Store,
        client: FmpClient | None = None,
        *,
        ttl_s: float = 300.0,
        wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.client = store, client
        self._ttl, self._wait, self._clock = ttl_s, wait_s, clock
        self._cache: collections.OrderedDict[str, tuple[float, CompanyLookup]] = collections.OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> CompanyService:
        return cls(
            store,
            FmpClient.from_settings(settings),
            ttl_s=settings.company_cache_ttl_s,
            wait_s=settings.company_live_wait_s,
        )

    def lookup(self, symbol: str) -> CompanyLookup:
        """`symbol` is an upper-case ticker (callers check its form)."""
        if self.client is None:
            return CompanyLookup(symbol=symbol, profile=self.store.get_company_profile(symbol))
        cached = self._cached(symbol)
        if cached is not None:
            return cached
        try:
            # one try each: a person is waiting, and the stored profile is a fine answer meanwhile
            profile = profile_from_fmp(self.client.profile(symbol, wait_s=self._wait, attempts=1), symbol)
            quote = quote_from_fmp(self.client.quote(symbol, wait_s=self._wait, attempts=1), symbol)
        except (FmpError, RowError) as exc:
            reason = exc.reason if isinstance(exc, FmpError) else f"FMP answered a malformed row: {exc}"
            return CompanyLookup(
                symbol=symbol, profile=self.store.get_company_profile(symbol), stale=True, error=reason
            )
        found = CompanyLookup(
            symbol=symbol,
            profile=profile if profile is not None else self.store.get_company_profile(symbol),
            quote=quote,
            live=profile is not None,
            fetched_at=dt.datetime.now(dt.UTC),
        )
        self._keep(symbol, found)
        return found

    def _cached(self, symbol: str) -> CompanyLookup | None:
        with self._lock:
            entry = self._cache.get(symbol)
            if entry is None or entry[0] <= self._clock():
                return None
            self._cache.move_to_end(symbol)
            return entry[1]

    def _keep(self, symbol: str, found: CompanyLookup) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._cache[symbol] = (self._clock() + self._ttl, found)
            self._cache.move_to_end(symbol)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
