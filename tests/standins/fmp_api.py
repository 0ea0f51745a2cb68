"""A local stand-in for the Financial Modeling Prep endpoints Clera calls: `/stable/profile` and `/stable/quote`.

It answers in FMP's stable shape (a JSON list of one row per symbol, `[]` for an unknown symbol),
checks the `apikey` query parameter (401 with FMP's `{"Error Message": ...}` otherwise), and enforces
a request budget as FMP does: more than `limit` requests in any `window_s` seconds get a 429 with
`Retry-After`. It measures what it received: `max_in_window()` is the most requests that arrived in
any window, `over_limit` the requests refused for exceeding the budget.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from standins.served import ThreadedServer


def stable_profile(symbol: str) -> dict[str, Any]:
    """A complete, well-formed stable profile row (values made up per symbol, shapes as FMP's)."""
    n = sum(map(ord, symbol))
    return {
        "symbol": symbol, "price": 100 + n % 50 + 0.25, "marketCap": 1_000_000_000 + n * 1_000, "beta": 1.1,
        "lastDividend": 0.96, "range": "90.1-160.2", "change": -1.5, "changePercentage": -0.93,
        "volume": 51_000_000, "averageVolume": 55_000_000, "companyName": f"{symbol} Holdings Inc.",
        "currency": "USD", "cik": "0000320193", "isin": f"US{n:010d}", "cusip": "037833100",
        "exchangeFullName": "NASDAQ Global Select", "exchange": "NASDAQ", "industry": "Consumer Electronics",
        "website": f"https://www.{symbol.lower()}.example", "description": f"{symbol} makes things.",
        "ceo": "Jane Doe", "sector": "Technology", "country": "US", "fullTimeEmployees": "164000",
        "phone": "(408) 996-1010", "address": "One Park Way", "city": "Cupertino", "state": "CA",
        "zip": "95014", "image": f"https://images.financialmodelingprep.com/symbol/{symbol}.png",
        "ipoDate": "1980-12-12", "defaultImage": False, "isEtf": False, "isActivelyTrading": True,
        "isAdr": False, "isFund": False,
    }


def stable_quote(symbol: str) -> dict[str, Any]:
    row = stable_profile(symbol)
    return {
        "symbol": symbol, "name": row["companyName"], "price": row["price"], "changePercentage": -0.93,
        "change": -1.5, "volume": 51_000_000, "dayLow": 99.0, "dayHigh": 161.0, "marketCap": row["marketCap"],
        "exchange": "NASDAQ", "open": 101.0, "previousClose": row["price"] + 1.5, "timestamp": 1764787200,
    }


class FmpStandin:
    """`with FmpStandin("key", limit=5, window_s=1.0) as fmp:` then set CLERA_FMP_URL to `fmp.url`.

    Test controls: `profiles[symbol]` replaces the stable row by anything (a malformed one, `[]`, ...);
    `unknown` symbols answer `[]`; `script(symbol, 429, 500, ...)` answers these statuses to the next
    requests for `symbol` before the real answer; `retry_after` is the header of every 429; `down`
    answers 503 to everything. Readings: `calls` (path, symbol) -> count, `arrivals` (monotonic times).
    """

    def __init__(
        self, api_key: str, *, limit: int = 270, window_s: float = 60.0, retry_after: str | None = "1"
    ) -> None:
        self.api_key, self.limit, self.window_s, self.retry_after = api_key, limit, window_s, retry_after
        self.profiles: dict[str, Any] = {}
        self.unknown: set[str] = set()
        self.down = False
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.arrivals: list[float] = []
        self.over_limit = 0
        self._scripts: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.url = ""

    def __enter__(self) -> FmpStandin:
        self._served = ThreadedServer(Starlette(routes=[
            Route("/stable/profile", self._profile), Route("/stable/quote", self._quote),
        ]), "FMP")
        self.url = self._served.url
        return self

    def __exit__(self, *exc: object) -> None:
        self._served.stop()

    # --- test controls and readings -------------------------------------------------------------
    def script(self, symbol: str, *statuses: int) -> None:
        with self._lock:
            self._scripts.setdefault(symbol, []).extend(statuses)

    def max_in_window(self) -> int:
        """The most requests that arrived within any `window_s` (sliding over every arrival)."""
        times, most, first = sorted(self.arrivals), 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= self.window_s:
                first += 1
            most = max(most, last - first + 1)
        return most

    def requests_for(self, symbol: str) -> int:
        return sum(n for (path, s), n in self.calls.items() if s == symbol and path == "/stable/profile")

    # --- the endpoints ----------------------------------------------------------------------------
    def _admit(self, request: Request) -> tuple[str, Response | None]:
        """Counts the request and answers the refusals FMP would give, before any data."""
        symbol = request.query_params.get("symbol", "").upper()
        now = time.monotonic()
        with self._lock:
            self.arrivals.append(now)
            self.calls[(request.url.path, symbol)] += 1
            recent = sum(1 for at in self.arrivals if at > now - self.window_s)
            scripted = self._scripts.get(symbol)
            status = scripted.pop(0) if scripted else None
            if recent > self.limit:
                self.over_limit += 1
                status = 429
        if request.query_params.get("apikey") != self.api_key:
            return symbol, JSONResponse(
                {"Error Message": "Invalid API KEY. Please retry or visit our documentation."}, 401
            )
        if self.down:
            status = 503
        if status == 429:
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return symbol, JSONResponse(
                {"Error Message": "Limit Reach . Please upgrade your plan."}, 429, headers=headers
            )
        if status is not None:
            return symbol, Response("upstream trouble", status)
        if not symbol:
            return symbol, JSONResponse({"Error Message": "symbol is required"}, 400)
        return symbol, None

    async def _profile(self, request: Request) -> Response:
        symbol, refused = self._admit(request)
        if refused is not None:
            return refused
        if symbol in self.unknown:
            return JSONResponse([])
        return JSONResponse(self.profiles[symbol] if symbol in self.profiles else [stable_profile(symbol)])

    async def _quote(self, request: Request) -> Response:
        symbol, refused = self._admit(request)
        if refused is not None:
            return refused
        return JSONResponse([] if symbol in self.unknown else [stable_quote(symbol)])
