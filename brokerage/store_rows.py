"""Rows of `app_users`, `user_accounts` and `bank_links` -> the `Store` port's records, for every store
that reads those tables (SQLite, PostgreSQL, Supabase): one mapping, so the stores cannot drift apart."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from brokerage.store import AccountRecord, BankLink, User

UTC = dt.UTC


def moment(value: str | dt.datetime) -> dt.datetime:
    """A stored timestamp (ISO-8601 text from SQLite and PostgREST, a datetime from psycopg) in UTC."""
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return parsed.astimezone(UTC)


def parse_ts(value: str | dt.datetime | None) -> dt.datetime | None:
    return None if value is None else moment(value)


def user_from_row(row: Mapping[str, Any]) -> User:
    return User(id=row["id"], email=row.get("email"), created_at=moment(row["created_at"]))


def account_from_row(row: Mapping[str, Any]) -> AccountRecord:
    return AccountRecord(
        account_id=row["account_id"],
        user_id=row["user_id"],
        status=row["status"],
        email=row.get("email"),
        account_number=row.get("account_number"),
        created_at=moment(row["created_at"]),
        updated_at=moment(row["updated_at"]),
        closure_requested_at=parse_ts(row.get("closure_requested_at")),
        closed_at=parse_ts(row.get("closed_at")),
        confirmation_code=row.get("confirmation_code"),
    )


def bank_link_from_row(row: Mapping[str, Any]) -> BankLink:
    return BankLink(
        relationship_id=row["relationship_id"],
        account_id=row["account_id"],
        item_id=row["item_id"],
        needs_relink=bool(row["needs_relink"]),  # SQLite keeps 0/1
        last_event=row.get("last_event"),
        created_at=moment(row["created_at"]),
        updated_at=moment(row["updated_at"]),
    )
