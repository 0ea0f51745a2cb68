"""FMP's JSON -> a `CompanyProfile` / `FmpQuote`, every field checked on its own.

FMP's rows are loosely typed (empty strings for missing dates, numbers as strings, nulls), and one
bad field must cost that field, not the row or the run: an unparseable number or date becomes null,
text is trimmed (empty -> null, NUL bytes dropped: PostgreSQL refuses them), flags fall back to
their default. Only a row that is not a company at all (not an object, another symbol's) is refused.
Both the stable field names (`marketCap`, `lastDividend`, `change`, `exchangeFullName`) and the
legacy ones (`mktCap`, `lastDiv`, `changes`, `exchangeShortName`) are read.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

import msgspec

from brokerage.store import CompanyProfile


class RowError(ValueError):
    """The row cannot be a profile of the asked symbol."""


class FmpQuote(msgspec.Struct, kw_only=True):
    """FMP's live quote of a symbol (display data: floats)."""

    symbol: str
    price: float | None = None
    change: Annotated[float, msgspec.Meta(description="US dollars since the previous close")] | None = None
    change_pct: Annotated[float, msgspec.Meta(description="percent since the previous close")] | None = None
    previous_close: float | None = None
    day_low: float | None = None
    day_high: float | None = None
    volume: Annotated[float, msgspec.Meta(description="shares traded today")] | None = None
    market_cap: float | None = None
    exchange: str | None = None
    timestamp: Annotated[float, msgspec.Meta(description="Unix seconds of the quote")] | None = None
    source: str = "fmp"


def number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip().replace(",", "")
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    cleaned = str(value).replace("\x00", "").strip()
    return cleaned or None


def day(value: Any) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def flag(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return default


def whole(value: Any) -> str | None:
    """A head count as the seed stores it (text), only when it is a whole number."""
    count = number(value)
    return str(int(count)) if count is not None and count >= 0 and count.is_integer() else None


def _first_row(body: Any, symbol: str) -> dict[str, Any] | None:
    """The row of `symbol` in FMP's answer (a list of rows, or one row); None when FMP has none."""
    rows = body if isinstance(body, list) else [body]
    if not rows:
        return None
    row = rows[0]
    if not isinstance(row, dict):
        raise RowError(f"malformed row: expected an object, got {type(row).__name__}")
    got = text(row.get("symbol"))
    if got is not None and got.upper() != symbol:
        raise RowError(f"the row is for {got!r}, not {symbol}")
    return row


def profile_from_fmp(body: Any, symbol: str) -> CompanyProfile | None:
    """The profile in FMP's `/stable/profile` answer for `symbol`; None when FMP knows no such symbol."""
    row = _first_row(body, symbol)
    if row is None:
        return None
    stable = "exchangeFullName" in row
    return CompanyProfile(
        symbol=symbol,
        company_name=text(row.get("companyName")) or "",
        price=number(row.get("price")),
        beta=number(row.get("beta")),
        vol_avg=number(row.get("averageVolume", row.get("volAvg"))),
        market_cap=number(row.get("marketCap", row.get("mktCap"))),
        last_div=number(row.get("lastDividend", row.get("lastDiv"))),
        range=text(row.get("range")),
        changes=number(row.get("change", row.get("changes"))),
        currency=text(row.get("currency")) or "USD",
        cik=text(row.get("cik")),
        isin=text(row.get("isin")),
        cusip=text(row.get("cusip")),
        exchange=text(row.get("exchangeFullName") if stable else row.get("exchange")),
        exchange_short_name=text(row.get("exchange") if stable else row.get("exchangeShortName")),
        industry=text(row.get("industry")),
        website=text(row.get("website")),
        description=text(row.get("description")),
        ceo=text(row.get("ceo")),
        sector=text(row.get("sector")),
        country=text(row.get("country")),
        full_time_employees=whole(row.get("fullTimeEmployees")),
        phone=text(row.get("phone")),
        address=text(row.get("address")),
        city=text(row.get("city")),
        state=text(row.get("state")),
        zip=text(row.get("zip")),
        dcf_diff=number(row.get("dcfDiff")),
        dcf=number(row.get("dcf")),
        image=text(row.get("image")),
        ipo_date=day(row.get("ipoDate")),
        default_image=flag(row.get("defaultImage"), False),
        is_etf=flag(row.get("isEtf"), False),
        is_actively_trading=flag(row.get("isActivelyTrading"), True),
        is_adr=flag(row.get("isAdr"), False),
        is_fund=flag(row.get("isFund"), False),
        source="fmp",
    )


def quote_from_fmp(body: Any, symbol: str) -> FmpQuote | None:
    row = _first_row(body, symbol)
    if row is None:
        return None
    return FmpQuote(
        symbol=symbol,
        price=number(row.get("price")),
        change=number(row.get("change")),
        change_pct=number(row.get("changePercentage", row.get("changesPercentage"))),
        previous_close=number(row.get("previousClose")),
        day_low=number(row.get("dayLow")),
        day_high=number(row.get("dayHigh")),
        volume=number(row.get("volume")),
        market_cap=number(row.get("marketCap")),
        exchange=text(row.get("exchange")),
        timestamp=number(row.get("timestamp")),
    )
