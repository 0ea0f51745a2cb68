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


from brokerage.errors import Conflict, NotFound, Unavailable
from brokerage.sql import DATABASE_DOWN, INTEGRITY, Database, Row
from brokerage.store import (
    ONBOARDING_STATUSES,
    AccountRecord,
    CompanyProfile,
    EmailClaim,
    OnboardingStatus,
    User,
    check_email,
    check_id,
    check_status,
    normalize_email,
    status_changes,
)
from engine.clock import Clock, WallClock

UTC = dt.UTC

_STATUS_LIST = ", ".join(f"'{s}'" for s in sorted(ONBOARDING_STATUSES))

# Version 1 of component "store". `{ts}`, `{now}` and `{json}` differ per dialect; `schema_sql("postgres")`
# is what ships as brokerage/supabase_schema.sql, so the two PostgreSQL paths share one DDL.
_V1 = f"""
CREATE TABLE IF NOT EXISTS app_users (
    id TEXT PRIMARY KEY,
    email TEXT,
    created_at {{ts}} NOT NULL{{now}}
);
CREATE TABLE IF NOT EXISTS user_accounts (
    account_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES app_users (id),
    status TEXT NOT NULL DEFAULT 'submitted' CHECK (status IN ({_STATUS_LIST})),
    email TEXT,
    account_number TEXT,
    created_at {{ts}} NOT NULL{{now}},
    updated_at {{ts}} NOT NULL{{now}},
    closure_requested_at {{ts}},
    closed_at {{ts}},
    confirmation_code TEXT
);
CREATE INDEX IF NOT EXISTS user_accounts_user_id_idx ON user_accounts (user_id);
CREATE INDEX IF NOT EXISTS user_accounts_email_idx ON user_accounts (email);
CREATE TABLE IF NOT EXISTS company_profiles (
    symbol TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    sector TEXT,
    industries {{json}} NOT NULL DEFAULT '[]',
    description TEXT,
    isin TEXT,
    country TEXT,
    facts {{json}} NOT NULL DEFAULT '{{{{}}}}',
    source TEXT NOT NULL,
    updated_at {{ts}} NOT NULL{{now}}
);
{{rls}}"""

# Version 2: one account per email, enforced by the database rather than checked before writing, and
# the claim an applicant holds on an email while the broker opens the account (see `claim_email`).
# The index fails to build if two accounts already share an email: a loud start rather than a quiet duplicate.
_V2 = """
CREATE UNIQUE INDEX IF NOT EXISTS user_accounts_email_key ON user_accounts (email);
DROP INDEX IF EXISTS user_accounts_email_idx;
CREATE TABLE IF NOT EXISTS email_claims (
    email TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES app_users (id),
    created_at {ts} NOT NULL{now}
);
{rls_v2}"""

# Supabase serves every public table over REST, to the browser's anon key too: row level security
# with no policy keeps these tables to the service role (and to the owner SqlStore connects as).
def _rls(*tables: str) -> str:
    return "".join(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;\n" for t in tables)


_DIALECT_TYPES = {
    "postgres": {
        "ts": "TIMESTAMPTZ", "now": " DEFAULT now()", "json": "JSONB",
        "rls": _rls("app_users", "user_accounts", "company_profiles"), "rls_v2": _rls("email_claims"),
    },
    "sqlite": {"ts": "TEXT", "now": "", "json": "TEXT", "rls": "", "rls_v2": ""},
}
_CLAIM_ATTEMPTS = 5


def schema_sql(dialect: str) -> list[str]:
    """The migration steps for one dialect ("postgres" or "sqlite")."""
    return [step.format(**_DIALECT_TYPES[dialect]).strip() + "\n" for step in (_V1, _V2)]


@contextlib.contextmanager
def _unavailable_when_down() -> Iterator[None]:
    """A database that cannot be written is Unavailable (503), as the Supabase store reports it."""
    try:
        yield
    except DATABASE_DOWN as exc:
        raise Unavailable(f"the store database is unavailable: {exc}", code="store_unavailable") from exc


_ACCOUNT_COLUMNS = (
    "account_id, user_id, status, email, account_number, created_at, updated_at,"
    " closure_requested_at, closed_at, confirmation_code"
)
_PROFILE_COLUMNS = "symbol, name, sector, industries, description, isin, country, facts, source, updated_at"


class SqlStore:
    """Users, account ownership, onboarding status and company profiles in one SQL database."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self._clock = clock or WallClock()

    def migrate(self) -> None:
        self.db.migrate("store", schema_sql(self.db.dialect))

    # -- conversions -----------------------------------------------------------------------------
    def _now(self) -> dt.datetime:
        return self._clock.now().astimezone(UTC)

    def _ts_in(self, value: dt.datetime | None) -> Any:
        if value is None or self.db.dialect == "postgres":
            return value
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    @staticmethod
    def _ts_out(value: Any) -> dt.datetime | None:
        if value is None:
            return None
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
        return moment.astimezone(UTC)

    def _json_in(self, value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    @staticmethod
    def _json_out(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    def _user(self, row: Row) -> User:
        return User(id=row["id"], email=row["email"], created_at=self._ts_out(row["created_at"]))  # type: ignore[arg-type]

    def _account(self, row: Row) -> AccountRecord:
        return AccountRecord(
            account_id=row["account_id"],
            user_id=row["user_id"],
            status=row["status"],
            email=row["email"],
            account_number=row["account_number"],
            created_at=self._ts_out(row["created_at"]),  # type: ignore[arg-type]
            updated_at=self._ts_out(row["updated_at"]),  # type: ignore[arg-type]
            closure_requested_at=self._ts_out(row["closure_requested_at"]),
            closed_at=self._ts_out(row["closed_at"]),
            confirmation_code=row["confirmation_code"],
        )

    def _profile(self, row: Row) -> CompanyProfile:
        return CompanyProfile(
            symbol=row["symbol"],
            name=row["name"],
            sector=row["sector"],
            industries=self._json_out(row["industries"]),
            description=row["description"],
            isin=row["isin"],
            country=row["country"],
            facts=self._json_out(row["facts"]),
            source=row["source"],
            updated_at=self._ts_out(row["updated_at"]),
        )

    # -- users and ownership -------------------------------------------------------------------
    def ensure_user(self, user_id: str, email: str | None = None) -> User:
        user_id = check_id("user_id", user_id)
        email = normalize_email(email)
        self.db.execute(
            "INSERT INTO app_users (id, email, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET email = COALESCE(excluded.email, app_users.email)",
            (user_id, email, self._ts_in(self._now())),
        )
        user = self.get_user(user_id)
        assert user is not None  # just written; users are never deleted
        return user

    def get_user(self, user_id: str) -> User | None:
        row = self.db.fetchone("SELECT id, email, created_at FROM app_users WHERE id = ?", (user_id,))
        return self._user(row) if row else None

    def add_account(
        self,
        user_id: str,
        account_id: str,
        *,
        email: str | None = None,
        account_number: str | None = None,
        status: OnboardingStatus = "submitted",
    ) -> AccountRecord:
        """Records that `user_id` owns `account_id`; repeating it is harmless, another owner is a Conflict."""
        user_id = check_id("user_id", user_id)
        account_id = check_id("account_id", account_id)
        check_status(status)
        email = normalize_email(email)
        now = self._ts_in(self._now())
        try:
            with _unavailable_when_down(), self.db.transaction():
                self.db.execute(
                    "INSERT INTO app_users (id, email, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (user_id, None, now),
                )
                self.db.execute(
                    f"INSERT INTO user_accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)"
                    " ON CONFLICT (account_id) DO NOTHING",
                    (account_id, user_id, status, email, account_number, now, now),
                )
                record = self.get_account(account_id)
        except INTEGRITY:
            holder = self.account_by_email(email) if email else None
            if holder is None or holder.account_id == account_id:
                raise
            raise Conflict("an account with this email address already exists", code="email_in_use") from None
        assert record is not None  # just written; accounts are never deleted
        if record.user_id != user_id:
            raise Conflict(f"account {account_id} belongs to another user", code="account_owned_elsewhere")
        return record

    def get_account(self, account_id: str) -> AccountRecord | None:
        row = self.db.fetchone(f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE account_id = ?", (account_id,))
        return self._account(row) if row else None

    def accounts_of(self, user_id: str) -> list[AccountRecord]:
        rows = self.db.fetchall(
            f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE user_id = ? ORDER BY created_at, account_id",
            (user_id,),
        )
        return [self._account(r) for r in rows]

    def owner_of(self, account_id: str) -> str | None:
        row = self.db.fetchone("SELECT user_id FROM user_accounts WHERE account_id = ?", (account_id,))
        return row["user_id"] if row else None

    def account_by_email(self, email: str) -> AccountRecord | None:
        """The newest account opened with this email (compared case-insensitively)."""
        wanted = normalize_email(email)
        if wanted is None:
            return None
        row = self.db.fetchone(
            f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE email = ?"
            " ORDER BY created_at DESC, account_id DESC LIMIT 1",
            (wanted,),
        )
        return self._account(row) if row else None

    def claim_email(self, user_id: str, email: str) -> EmailClaim:
        user_id = check_id("user_id", user_id)
        wanted = check_email(email)
        now = self._ts_in(self._now())
        for _ in range(_CLAIM_ATTEMPTS):  # a claim released between our insert and our read: claim again
            with _unavailable_when_down(), self.db.transaction():
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
                return EmailClaim(email=wanted, user_id=row["user_id"], new=taken == 1)
        raise Unavailable(f"the claim on {wanted} kept changing; try again", code="store_contention")

    def release_email(self, user_id: str, email: str) -> None:
        wanted = normalize_email(email)
        with _unavailable_when_down():
            self.db.execute("DELETE FROM email_claims WHERE email = ? AND user_id = ?", (wanted, user_id))

    def list_account_ids(self) -> list[str]:
        rows = self.db.fetchall(
            "SELECT account_id FROM user_accounts WHERE status <> ? ORDER BY account_id", ("closed",)
        )
        return [r["account_id"] for r in rows]

    def set_account_status(
        self, account_id: str, status: OnboardingStatus, *, confirmation_code: str | None = None
    ) -> AccountRecord:
        check_status(status)
        with self.db.transaction():
            row = self.db.fetchone(
                f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE account_id = ?{self.db.for_update()}",
                (account_id,),
            )
            if row is None:
                raise NotFound(f"account {account_id} is not known", code="account_not_found")
            changes = status_changes(self._account(row), status, confirmation_code, self._now())
            columns = list(changes)
            values = [self._ts_in(v) if isinstance(v, dt.datetime) else v for v in changes.values()]
            self.db.execute(
                f"UPDATE user_accounts SET {', '.join(f'{c} = ?' for c in columns)} WHERE account_id = ?",
                (*values, account_id),
            )
            record = self.get_account(account_id)
        assert record is not None
        return record

    # -- company profiles ------------------------------------------------------------------------
    def upsert_company_profiles(self, profiles: list[CompanyProfile]) -> int:
        if not profiles:
            return 0
        now = self._now()
        rows = [
            (
                check_id("symbol", p.symbol).strip().upper(),
                p.name,
                p.sector,
                self._json_in(list(p.industries)),
                p.description,
                p.isin,
                p.country,
                self._json_in(dict(p.facts)),
                p.source,
                self._ts_in(p.updated_at or now),
            )
            for p in profiles
        ]
        sql = (
            f"INSERT INTO company_profiles ({_PROFILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (symbol) DO UPDATE SET name = excluded.name, sector = excluded.sector,"
            " industries = excluded.industries, description = excluded.description, isin = excluded.isin,"
            " country = excluded.country, facts = excluded.facts, source = excluded.source,"
            " updated_at = excluded.updated_at"
        )
        with self.db.transaction():
            for row in rows:
                self.db.execute(sql, row)
        return len(rows)

    def get_company_profile(self, symbol: str) -> CompanyProfile | None:
        if not isinstance(symbol, str) or not symbol.strip():
            return None
        row = self.db.fetchone(
            f"SELECT {_PROFILE_COLUMNS} FROM company_profiles WHERE symbol = ?", (symbol.strip().upper(),)
        )
        return self._profile(row) if row else None

    def count_company_profiles(self) -> int:
        row = self.db.fetchone("SELECT COUNT(*) AS n FROM company_profiles")
        return int(row["n"]) if row else 0
