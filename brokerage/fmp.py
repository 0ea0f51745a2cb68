"""Financial Modeling Prep's current ("stable") API: company profiles and quotes.

Every request goes through one `WindowLimiter` (FMP's per-minute budget) and is retried with
tenacity on what FMP means as "later": 429 (after its `Retry-After`, which pauses every caller of
the limiter), 5xx and network errors, with exponential backoff and jitter. A refused key (401/403)
is not retried. The key travels as FMP's `apikey` query parameter, so it must never reach a log:
errors name the path and the status only, and httpx's request log (which prints whole URLs) is
kept at WARNING.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from brokerage.rate_limit import RateLimited, WindowLimiter
from engine.config import Settings

logging.getLogger("httpx").setLevel(logging.WARNING)

MAX_RETRY_AFTER_S = 300.0  # a Retry-After beyond this is treated as this (a broken header must not stall a run)


class FmpError(Exception):
    """FMP gave no usable answer; `fatal` when no later request can succeed either (the key is refused)."""

    def __init__(
        self, reason: str, *, retryable: bool = False, fatal: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason, self.retryable, self.fatal, self.retry_after = reason, retryable, fatal, retry_after


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """`Retry-After` as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class FmpClient:
    def __init__(
        self,
        api_key: str,
        *,
        base_url: str,
        limiter: WindowLimiter,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 1.0,
    ) -> None:
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self._attempts = attempts
        self._backoff = wait_exponential_jitter(multiplier=backoff_s, max=max(backoff_s, 30.0), jitter=backoff_s)
        self._http = httpx.Client(timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, limiter: WindowLimiter | None = None) -> FmpClient | None:
        """The client of the configured key, or None without one (the offline data then)."""
        if not settings.fmp_api_key:
            return None
        return cls(
            settings.fmp_api_key,
            base_url=settings.fmp_url,
            limiter=limiter or WindowLimiter(settings.fmp_rate_limit, settings.fmp_rate_window_s),
            timeout_s=settings.fmp_timeout_s,
            attempts=settings.fmp_attempts,
            backoff_s=settings.fmp_backoff_s,
        )

    def close(self) -> None:
        self._http.close()

    def profile(self, symbol: str, *, wait_s: float | None = None, attempts: int | None = None) -> Any:
        """The JSON of `/stable/profile` (a list, empty for a symbol FMP does not know)."""
        return self._get("/stable/profile", symbol, wait_s, attempts)

    def quote(self, symbol: str, *, wait_s: float | None = None, attempts: int | None = None) -> Any:
        """The JSON of `/stable/quote` (a list)."""
        return self._get("/stable/quote", symbol, wait_s, attempts)

    def _get(self, path: str, symbol: str, wait_s: float | None, attempts: int | None) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(attempts or self._attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, FmpError) and e.retryable),
            reraise=True,
        )
        return retrying(self._once, path, symbol, wait_s)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, FmpError) and error.retry_after is not None:
            return 0.0  # the limiter is paused for Retry-After; waiting here too would double it
        return float(self._backoff(state))

    def _once(self, path: str, symbol: str, wait_s: float | None) -> Any:
        try:
            with self.limiter.slot(wait_s):
                response = self._http.get(self.base_url + path, params={"symbol": symbol, "apikey": self._key})
        except RateLimited as exc:
            raise FmpError(f"FMP request budget spent: {exc}") from None
        except httpx.HTTPError as exc:
            raise FmpError(f"FMP {path} not reachable ({type(exc).__name__})", retryable=True) from None
        status = response.status_code
        if status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None:
                self.limiter.pause(wait)
            raise FmpError(f"FMP {path} rate limit (429)", retryable=True, retry_after=wait)
        if status >= 500:
            raise FmpError(f"FMP {path} answered {status}", retryable=True)
        if status in (401, 403):
            raise FmpError(f"FMP refused the API key on {path} ({status})", fatal=True)
        if status != 200:
            raise FmpError(f"FMP {path} answered {status}")
        try:
            body = response.json()
        except ValueError:
            raise FmpError(f"FMP {path} answered malformed JSON") from None
        if isinstance(body, dict) and "Error Message" in body:
            raise FmpError(f"FMP {path}: {str(body['Error Message'])[:200]}")
        return body
