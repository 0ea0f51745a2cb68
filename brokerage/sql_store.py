"""`SqlStore`: the `Store` port on `brokerage.sql.Database`, one code path for SQLite and PostgreSQL.

Writes that race (two requests creating the same user or account, two users claiming one email) are
single upsert statements or meet a unique index, so the database, not the caller, decides who wins:
an email belongs to at most one account (`user_accounts_email_key`) and is claimed by at most one
user (`email_claims`). Timestamps are aware UTC datetimes on the way out;
SQLite keeps them as ISO-8601 text, PostgreSQL as TIMESTAMPTZ.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from brokerage import store
from brokerage.errors import Conflict, NotFound, Unavailable
from brokerage.profile_rows import OWN_COLUMNS, normal_symbol, profile_from_row, profile_row
from brokerage.sql import DATABASE_DOWN, INTEGRITY, Database
from brokerage.store import check_status, status_changes
from brokerage.store_rows import account_from_row, bank_link_from_row, moment, user_from_row
from brokerage.store_schema import schema_sql
from engine.clock import Clock, WallClock

UTC = dt.UTC


@contextlib.contextmanager
def unavailable_when_down() -> Iterator[None]:
    """A database that cannot be written is Unavailable (503), as the Supabase store reports it."""
    try:
        yield
    except DATABASE_DOWN as exc:
        raise Unavailable(f"the store database is unavailable: {exc}", code="store_unavailable") from exc


_ACCOUNT_COLUMNS = (
    "account_id, user_id, status, email, account_number, created_at, updated_at,"
    " closure_requested_at, closed_at, confirmation_code"
)
_BANK_LINK_COLUMNS = "relationship_id, account_id, item_id, needs_relink, last_event, created_at, updated_at"
_IN_CHUNK = 500  # symbols asked for in one IN (...) list
_CLAIM_ATTEMPTS = 5


class SqlStore(store.CheckedStore):
    """Users, account ownership, onboarding status and company profiles in one SQL database."""

    layout = "own"

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self._clock = clock or WallClock()
        self._profile_cols: tuple[str, ...] | None = None

    def migrate(self) -> None:
        self.db.migrate("store", schema_sql(self.db.dialect))
        self._profile_cols = None

    # -- conversions -----------------------------------------------------------------------------
    def _now(self) -> dt.datetime:
        return self._clock.now().astimezone(UTC)

    def _ts_in(self, value: dt.datetime | None) -> Any:
        if value is None or self.db.dialect == "postgres":
            return value
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    def _json_in(self, value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    # -- users and ownership -------------------------------------------------------------------
    def _ensure_user(self, user_id: str, email: str | None) -> store.User:
        self.db.execute(
            "INSERT INTO app_users (id, email, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET email = COALESCE(excluded.email, app_users.email)",
            (user_id, email, self._ts_in(self._now())),
        )
        user = self.get_user(user_id)
        assert user is not None  # just written; users are never deleted
        return user

    def get_user(self, user_id: str) -> store.User | None:
        row = self.db.fetchone("SELECT id, email, created_at FROM app_users WHERE id = ?", (user_id,))
        return user_from_row(row) if row else None

    def _attach_account(self, new: store.NewAccount) -> store.AccountRecord:
        now = self._ts_in(self._now())
        try:
            with unavailable_when_down(), self.db.transaction():
                self.db.execute(
                    "INSERT INTO app_users (id, email, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (new.user_id, None, now),
                )
                self.db.execute(
                    f"INSERT INTO user_accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)"
                    " ON CONFLICT (account_id) DO NOTHING",
                    (new.account_id, new.user_id, new.status, new.email, new.account_number, now, now),
                )
                record = self.get_account(new.account_id)
        except INTEGRITY:
            holder = self.account_by_email(new.email) if new.email else None
            if holder is None or holder.account_id == new.account_id:
                raise
            raise Conflict("an account with this email address already exists", code="email_in_use") from None
        assert record is not None  # just written; accounts are never deleted
        return record

    def get_account(self, account_id: str) -> store.AccountRecord | None:
        row = self.db.fetchone(f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE account_id = ?", (account_id,))
        return account_from_row(row) if row else None

    def accounts_of(self, user_id: str) -> list[store.AccountRecord]:
        rows = self.db.fetchall(
            f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE user_id = ? ORDER BY created_at, account_id",
            (user_id,),
        )
        return [account_from_row(r) for r in rows]

    def owner_of(self, account_id: str) -> str | None:
        row = self.db.fetchone("SELECT user_id FROM user_accounts WHERE account_id = ?", (account_id,))
        return row["user_id"] if row else None

    def _account_by_email(self, email: str) -> store.AccountRecord | None:
        """The newest account opened with this email."""
        row = self.db.fetchone(
            f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE email = ?"
            " ORDER BY created_at DESC, account_id DESC LIMIT 1",
            (email,),
        )
        return account_from_row(row) if row else None

    def _claim_email(self, user_id: str, wanted: str) -> store.EmailClaim:
        now = self._ts_in(self._now())
        for _ in range(_CLAIM_ATTEMPTS):  # a claim released between our insert and our read: claim again
            with unavailable_when_down(), self.db.transaction():
                self.db.execute(
                    "INSERT INTO app_users (id, email, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (user_id, None, now),
                )
                taken = self.db.execute(
                    "INSERT INTO email_claims (email, user_id, created_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (email) DO NOTHING",
                    (wanted, user_id, now),
                )
                row = self.db.fetchone("SELECT user_id FROM email_claims WHERE email = ?", (wanted,))
            if row is not None:
                return store.EmailClaim(email=wanted, user_id=row["user_id"], new=taken == 1)
        raise Unavailable(f"the claim on {wanted} kept changing; try again", code="store_contention")

    def _release_email(self, user_id: str, email: str) -> None:
        with unavailable_when_down():
            self.db.execute("DELETE FROM email_claims WHERE email = ? AND user_id = ?", (email, user_id))

    def list_account_ids(self) -> list[str]:
        rows = self.db.fetchall(
            "SELECT account_id FROM user_accounts WHERE status <> ? ORDER BY account_id", ("closed",)
        )
        return [r["account_id"] for r in rows]

    def set_account_status(
        self, account_id: str, status: store.OnboardingStatus, *, confirmation_code: str | None = None
    ) -> store.AccountRecord:
        check_status(status)
        with self.db.transaction():
            row = self.db.fetchone(
                f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE account_id = ?{self.db.for_update()}",
                (account_id,),
            )
            if row is None:
                raise NotFound(f"account {account_id} is not known", code="account_not_found")
            changes = status_changes(account_from_row(row), status, confirmation_code, self._now())
            columns = list(changes)
            values = [self._ts_in(v) if isinstance(v, dt.datetime) else v for v in changes.values()]
            self.db.execute(
                f"UPDATE user_accounts SET {', '.join(f'{c} = ?' for c in columns)} WHERE account_id = ?",
                (*values, account_id),
            )
            record = self.get_account(account_id)
        assert record is not None
        return record

    # -- bank links made through Plaid -----------------------------------------------------------
    def record_bank_link(self, account_id: str, relationship_id: str, item_id: str) -> store.BankLink:
        now = self._ts_in(self._now())
        with unavailable_when_down(), self.db.transaction():
            self.db.execute(
                f"INSERT INTO bank_links ({_BANK_LINK_COLUMNS}) VALUES (?, ?, ?, ?, NULL, ?, ?)"
                " ON CONFLICT (relationship_id) DO UPDATE SET account_id = excluded.account_id,"
                " item_id = excluded.item_id, needs_relink = excluded.needs_relink, last_event = NULL,"
                " created_at = excluded.created_at, updated_at = excluded.updated_at",
                (relationship_id, account_id, item_id, False, now, now),
            )
            row = self.db.fetchone(
                f"SELECT {_BANK_LINK_COLUMNS} FROM bank_links WHERE relationship_id = ?", (relationship_id,)
            )
        assert row is not None  # just written
        return bank_link_from_row(row)

    def record_item_event(self, item_id: str, event: str, needs_relink: bool | None) -> list[store.BankLink]:
        flag = "" if needs_relink is None else ", needs_relink = ?"
        with unavailable_when_down(), self.db.transaction():
            self.db.execute(
                f"UPDATE bank_links SET last_event = ?, updated_at = ?{flag} WHERE item_id = ?",
                (event, self._ts_in(self._now()), *(() if needs_relink is None else (needs_relink,)), item_id),
            )
            rows = self.db.fetchall(
                f"SELECT {_BANK_LINK_COLUMNS} FROM bank_links WHERE item_id = ? ORDER BY relationship_id", (item_id,)
            )
        return [bank_link_from_row(r) for r in rows]

    def bank_links_of(self, account_id: str) -> list[store.BankLink]:
        rows = self.db.fetchall(
            f"SELECT {_BANK_LINK_COLUMNS} FROM bank_links WHERE account_id = ? ORDER BY created_at, relationship_id",
            (account_id,),
        )
        return [bank_link_from_row(r) for r in rows]

    # -- company profiles ------------------------------------------------------------------------
    def _profile_columns(self) -> tuple[str, ...]:
        """The profile columns the table has: all of ours, or the seed's alone in an existing Clera table."""
        if self._profile_cols is None:
            if self.db.dialect == "sqlite":
                names = {r["name"] for r in self.db.fetchall("PRAGMA table_info(company_profiles)")}
            else:
                names = {
                    r["column_name"]
                    for r in self.db.fetchall(
                        "SELECT column_name FROM information_schema.columns"
                        " WHERE table_schema = current_schema() AND table_name = 'company_profiles'"
                    )
                }
            self._profile_cols = tuple(c for c in OWN_COLUMNS if c in names)
        return self._profile_cols

    def _profile_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self._json_in(value)
        if isinstance(value, dt.datetime):
            return self._ts_in(value)
        if isinstance(value, dt.date) and self.db.dialect == "sqlite":
            return value.isoformat()
        return value

    def upsert_company_profiles(self, profiles: list[store.CompanyProfile]) -> int:
        if not profiles:
            return 0
        columns = self._profile_columns()
        now = self._now()
        rows = [tuple(self._profile_value(v) for v in profile_row(p, columns, now).values()) for p in profiles]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "symbol")
        sql = (
            f"INSERT INTO company_profiles ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            f" ON CONFLICT (symbol) DO UPDATE SET {updates}"
        )
        with unavailable_when_down(), self.db.transaction():
            for row in rows:
                self.db.execute(sql, row)
        return len(rows)

    def get_company_profile(self, symbol: str) -> store.CompanyProfile | None:
        if not isinstance(symbol, str) or not symbol.strip():
            return None
        row = self.db.fetchone(
            f"SELECT {', '.join(self._profile_columns())} FROM company_profiles WHERE symbol = ?",
            (symbol.strip().upper(),),
        )
        return profile_from_row(row) if row else None

    def count_company_profiles(self) -> int:
        row = self.db.fetchone("SELECT COUNT(*) AS n FROM company_profiles")
        return int(row["n"]) if row else 0

    def profile_update_times(self, symbols: list[str]) -> dict[str, dt.datetime]:
        wanted = sorted({normal_symbol(s) for s in symbols})
        found: dict[str, dt.datetime] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            rows = self.db.fetchall(
                f"SELECT symbol, updated_at FROM company_profiles WHERE symbol IN ({', '.join('?' for _ in chunk)})"
                + (" AND source = 'fmp'" if "source" in self._profile_columns() else ""),
                chunk,
            )
            found.update({r["symbol"]: moment(r["updated_at"]) for r in rows if r["updated_at"] is not None})
        return found
