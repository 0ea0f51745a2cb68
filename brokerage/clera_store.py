"""`CleraSqlStore`: the `Store` port on an existing Clera database (PostgreSQL), `CLERA_SCHEMA=clera`.

Today's Clera keeps each person's brokerage account and onboarding state in `user_onboarding`
(owned by the frontend): the account is `alpaca_account_id` of a row for the person's `user_id`, the
status is the `onboarding_status` enum (`not_started`, `in_progress`, `submitted`, `approved`,
`pending_closure`, `closed`) and a closure is recorded in `closure_initiated_at`,
`closure_completed_at` and `closure_confirmation_code`. This store reads and writes ownership, status
and closure there and nowhere else, so every existing person's account is theirs from the first request.

Nothing of that table is created, dropped or altered except the seed's own closure columns and the
enum's two closure values (added if missing). What the seed has no place for lives in this
project's own tables beside it: `app_users`, `email_claims`, `account_emails` (one account per
email) and `account_claims` (which writer attaches an account id: the frontend's table may get no
unique index). Status words the enum lacks are mapped: `active` is written as `approved` (Clera's "the
account is open"); `rejected` is not written (the broker's own status says it). The account number
goes to `alpaca_account_number`, and `updated_at` only if the table has one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from brokerage.clera_schema import CLERA_SCHEMA_SQL
from brokerage.errors import Conflict, InvalidRequest, NotFound
from brokerage.sql import Database
from brokerage.sql_store import SqlStore, unavailable_when_down
from brokerage.store import (
    AccountRecord,
    NewAccount,
    OnboardingStatus,
    check_email,
    check_status,
    status_changes,
)
from brokerage.store_rows import account_from_row
from engine.config import ConfigError

CLERA_STATUS: dict[str, str | None] = {"active": "approved", "rejected": None}  # ours -> the enum's (None: not written)
# our AccountRecord field -> user_onboarding's column
CLOSURE_COLUMNS = {
    "closure_requested_at": "closure_initiated_at",
    "closed_at": "closure_completed_at",
    "confirmation_code": "closure_confirmation_code",
}


def clera_status(status: str) -> str | None:
    return CLERA_STATUS.get(status, status)


def clera_changes(
    current: AccountRecord, status: str, confirmation_code: str | None, now: dt.datetime, has_updated_at: bool
) -> dict[str, Any]:
    """`status_changes` in user_onboarding's columns and enum words (shared by both Clera stores)."""
    changes = status_changes(current, status, confirmation_code, now)
    written = clera_status(status)
    if written in (None, current.status) and confirmation_code is None:
        return {}  # nothing the enum can say differently (`active` over `approved`, every broker sync)
    sets: dict[str, Any] = {CLOSURE_COLUMNS.get(k, k): v for k, v in changes.items()}
    if written is None:
        sets.pop("status")
    else:
        sets["status"] = written
    if not has_updated_at:
        sets.pop("updated_at")
    return sets


def has_clera_tables(db: Database) -> bool:
    """The database is an existing Clera one (CLERA_SCHEMA=auto): it has the frontend's `user_onboarding`."""
    if db.dialect != "postgres":
        return False
    row = db.fetchone("SELECT to_regclass('user_onboarding') IS NOT NULL AS found")
    return bool(row and row["found"])


class CleraSqlStore(SqlStore):
    """Accounts in the frontend's `user_onboarding`; users, claims and profiles as in `SqlStore`."""

    layout = "clera"

    def __init__(self, db: Database, **kwargs: Any) -> None:
        if db.dialect != "postgres":
            raise ConfigError("CLERA_SCHEMA=clera needs PostgreSQL: set DATABASE_URL (or CLERA_STORE=supabase)")
        super().__init__(db, **kwargs)
        self._has_updated_at = False

    def migrate(self) -> None:
        if not has_clera_tables(self.db):
            raise ConfigError("CLERA_SCHEMA=clera but the database has no user_onboarding table (is it Clera's?)")
        self.db.migrate("store_clera", CLERA_SCHEMA_SQL)
        self._profile_cols = None
        row = self.db.fetchone(
            "SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = 'user_onboarding' AND column_name = 'updated_at'"
        )
        self._has_updated_at = bool(row and row["n"])

    # -- reading ---------------------------------------------------------------------------------
    def _select(self, where: str) -> str:
        updated = "o.updated_at" if self._has_updated_at else "o.created_at"
        return (
            "SELECT o.alpaca_account_id AS account_id, o.user_id::text AS user_id, o.status::text AS status,"
            " o.alpaca_account_number AS account_number, o.created_at, "
            f"{updated} AS updated_at, o.closure_initiated_at AS closure_requested_at,"
            " o.closure_completed_at AS closed_at, o.closure_confirmation_code AS confirmation_code, e.email"
            " FROM user_onboarding o LEFT JOIN account_emails e ON e.account_id = o.alpaca_account_id"
            f" WHERE o.alpaca_account_id IS NOT NULL AND {where}"
        )

    def get_account(self, account_id: str) -> AccountRecord | None:
        row = self.db.fetchone(
            self._select("o.alpaca_account_id = ?") + " ORDER BY o.created_at LIMIT 1", (account_id,)
        )
        return account_from_row(row) if row else None

    def accounts_of(self, user_id: str) -> list[AccountRecord]:
        rows = self.db.fetchall(
            self._select("o.user_id::text = ?") + " ORDER BY o.created_at, o.alpaca_account_id", (user_id,)
        )
        return [account_from_row(r) for r in rows]

    def owner_of(self, account_id: str) -> str | None:
        record = self.get_account(account_id)
        return record.user_id if record else None

    def _account_by_email(self, email: str) -> AccountRecord | None:
        row = self.db.fetchone(self._select("e.email = ?") + " LIMIT 1", (email,))
        return account_from_row(row) if row else None

    def list_account_ids(self) -> list[str]:
        rows = self.db.fetchall(
            "SELECT DISTINCT alpaca_account_id FROM user_onboarding WHERE alpaca_account_id IS NOT NULL"
            " AND status::text <> ? ORDER BY alpaca_account_id",
            ("closed",),
        )
        return [r["alpaca_account_id"] for r in rows]

    # -- writing ---------------------------------------------------------------------------------
    def _attach_account(self, new: NewAccount) -> AccountRecord:
        now = self._now()
        with unavailable_when_down(), self.db.transaction():
            self.db.execute(
                "INSERT INTO app_users (id, email, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (new.user_id, None, now),
            )
            current = self.get_account(new.account_id)
            # No unique index may be added to the frontend's table: the claim decides who attaches the
            # account (a racing insert waits for ours to commit, then finds it).
            if current is None and self.db.execute(
                "INSERT INTO account_claims (account_id, user_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (account_id) DO NOTHING",
                (new.account_id, new.user_id, now),
            ) == 1:
                self._claim_account_email(new.account_id, new.email)
                self._attach(new.user_id, new.account_id, new.account_number, new.status, now)
            current = current or self.get_account(new.account_id)
        if current is None:  # claimed by a writer that then failed (its transaction rolled back the claim)
            raise Conflict(
                f"account {new.account_id} is being attached by another request; retry", code="store_contention"
            )
        return current

    def _claim_account_email(self, account_id: str, email: str | None) -> None:
        if email is None:
            return
        taken = self.db.execute(
            "INSERT INTO account_emails (email, account_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (check_email(email), account_id, self._now()),
        )
        if taken != 1:
            raise Conflict("an account with this email address already exists", code="email_in_use")

    def _attach(self, user_id: str, account_id: str, number: str | None, status: str, now: dt.datetime) -> None:
        """The person's onboarding row without an account gets it; otherwise a new row."""
        written = clera_status(status) or "submitted"
        stamp = ", updated_at = ?" if self._has_updated_at else ""
        try:
            row = self.db.fetchone(
                "SELECT id FROM user_onboarding WHERE user_id::text = ? AND alpaca_account_id IS NULL"
                f" ORDER BY created_at LIMIT 1{self.db.for_update()}",
                (user_id,),
            )
            if row is not None:
                self.db.execute(
                    f"UPDATE user_onboarding SET alpaca_account_id = ?, alpaca_account_number = ?, status = ?{stamp}"
                    " WHERE id = ?",
                    (account_id, number, written, *((now,) if stamp else ()), row["id"]),
                )
                return
            columns = "user_id, alpaca_account_id, alpaca_account_number, status, created_at"
            values: tuple[Any, ...] = (user_id, account_id, number, written, now)
            if self._has_updated_at:
                columns, values = columns + ", updated_at", (*values, now)
            self.db.execute(
                f"INSERT INTO user_onboarding ({columns}) VALUES ({', '.join('?' for _ in values)})", values
            )
        except psycopg.errors.InvalidTextRepresentation as exc:  # user_id is a UUID column there
            raise InvalidRequest(
                f"user id {user_id!r} is not a Supabase user id: {exc}", code="invalid_user_id"
            ) from None

    def set_account_status(
        self, account_id: str, status: OnboardingStatus, *, confirmation_code: str | None = None
    ) -> AccountRecord:
        check_status(status)
        with unavailable_when_down(), self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"clera-account:{account_id}",))
            current = self.get_account(account_id)
            if current is None:
                raise NotFound(f"account {account_id} is not known", code="account_not_found")
            sets = clera_changes(current, status, confirmation_code, self._now(), self._has_updated_at)
            if sets:
                self.db.execute(
                    f"UPDATE user_onboarding SET {', '.join(f'{c} = ?' for c in sets)} WHERE alpaca_account_id = ?",
                    (*sets.values(), account_id),
                )
            record = self.get_account(account_id)
        assert record is not None
        return record
