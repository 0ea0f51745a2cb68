"""The columns of `company_profiles` and the one conversion between a row and a `CompanyProfile`.

Shared by the SQL and the Supabase store, so both write and read the same shape. The seed's
columns are what an existing Clera table has; this project's own table adds `source` and `facts`,
and a store writes only the columns its table has (an existing Clera table is used as it is).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import msgspec

from brokerage.store import CompanyProfile, check_id

SEED_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in msgspec.structs.fields(CompanyProfile) if f.name not in ("source", "facts")
)
OWN_COLUMNS: tuple[str, ...] = (*SEED_COLUMNS, "source", "facts")
UTC = dt.UTC


def normal_symbol(symbol: str) -> str:
    return check_id("symbol", symbol).strip().upper()


def profile_row(profile: CompanyProfile, columns: tuple[str, ...], now: dt.datetime) -> dict[str, Any]:
    """The values to write for `columns`; `updated_at` is the write's time unless the profile has one."""
    row = {name: getattr(profile, name) for name in columns}
    row["symbol"] = normal_symbol(profile.symbol)
    row["updated_at"] = (profile.updated_at or now).astimezone(UTC)
    if "facts" in row:
        row["facts"] = dict(profile.facts)
    return row


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):  # a NUMERIC column of an existing table
        return float(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC)
    return value


def profile_from_row(row: dict[str, Any]) -> CompanyProfile:
    """A stored row, whatever its database's types (SQLite text and integers, PostgreSQL's own, JSON)."""
    values = {k: _plain(v) for k, v in row.items() if k in OWN_COLUMNS and v is not None}
    if isinstance(values.get("facts"), str):
        values["facts"] = json.loads(values["facts"])
    if isinstance(values.get("ipo_date"), str):
        values["ipo_date"] = values["ipo_date"][:10]
    if values.get("company_name") is None:
        values["company_name"] = ""
    profile = msgspec.convert(values, CompanyProfile, strict=False)
    if profile.updated_at is not None:
        profile.updated_at = profile.updated_at.astimezone(UTC)
    return profile
