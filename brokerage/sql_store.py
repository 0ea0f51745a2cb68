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
from brokerage.profile_rows import OWN_COLUMNS, normal_symbol, profile_from_row, profile_row
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
# The users and the email claims are this project's own tables on either layout (see clera_store.py).
APP_USERS_DDL = """CREATE TABLE IF NOT EXISTS app_users (
    id TEXT PRIMARY KEY,
    email TEXT,
    created_at {ts} NOT NULL{now}
);
"""
EMAIL_CLAIMS_DDL = """CREATE TABLE IF NOT EXISTS email_claims (
    email TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES app_users (id),
    created_at {ts} NOT NULL{now}
);
"""
_V1 = "\n" + APP_USERS_DDL + f"""CREATE TABLE IF NOT EXISTS user_accounts (
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
""" + EMAIL_CLAIMS_DDL + "{rls_v2}"

# Version 3: company_profiles in the seed's shape (the column names of its FMP collector, which the frontend
# reads): `name` becomes `company_name`, `industries` (a list) becomes `industry` (its first entry), and
# the seed's FMP columns are added; `source` and `facts` stay as this project's own. On PostgreSQL the
# step runs only on this project's old table (it has `industries`), so an existing Clera table of that
# name, or one already converted, is left exactly as it is, and the SQL file can be applied again.
SEED_PROFILE_ADDED_DDL = """price {real}, beta {real}, vol_avg {real}, market_cap {real}, last_div {real}, range TEXT,
changes {real}, currency TEXT, cik TEXT, cusip TEXT, exchange TEXT, exchange_short_name TEXT, website TEXT,
ceo TEXT, full_time_employees TEXT, phone TEXT, address TEXT, city TEXT, state TEXT, zip TEXT, dcf_diff {real},
dcf {real}, image TEXT, ipo_date {date}, default_image {bool} NOT NULL DEFAULT {false},
is_etf {bool} NOT NULL DEFAULT {false}, is_actively_trading {bool} NOT NULL DEFAULT {true},
is_adr {bool} NOT NULL DEFAULT {false}, is_fund {bool} NOT NULL DEFAULT {false}"""


PROFILE_TYPES = {
    "postgres": {"real": "DOUBLE PRECISION", "date": "DATE", "bool": "BOOLEAN", "false": "false", "true": "true"},
    "sqlite": {"real": "REAL", "date": "TEXT", "bool": "INTEGER", "false": "0", "true": "1"},
}


def _v3(dialect: str) -> str:
    added = [c.strip() for c in SEED_PROFILE_ADDED_DDL.format(**PROFILE_TYPES[dialect]).replace("\n", " ").split(",")]
    first_industry = "industries ->> 0" if dialect == "postgres" else "json_extract(industries, '$[0]')"
    steps = [
        "ALTER TABLE company_profiles RENAME COLUMN name TO company_name",
        "ALTER TABLE company_profiles ADD COLUMN industry TEXT",
        f"UPDATE company_profiles SET industry = {first_industry}",
        "ALTER TABLE company_profiles DROP COLUMN industries",
        *(f"ALTER TABLE company_profiles ADD COLUMN {column}" for column in added),
    ]
    if dialect == "sqlite":
        return ";\n".join(steps) + ";\n"
    body = "".join(f"    {step};\n" for step in steps)
    return (
        "DO $$\nBEGIN\nIF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'company_profiles' AND column_name = 'industries') THEN\n"
        f"{body}END IF;\nEND $$;\n"
    )


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
    return [step.format(**_DIALECT_TYPES[dialect]).strip() + "\n" for step in (_V1, _V2)] + [_v3(dialect)]


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
_IN_CHUNK = 500  # symbols asked for in one IN (...) list


class SqlStore:
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

    @staticmethod
    def _ts_out(value: Any) -> dt.datetime | None:
        if value is None:
            return None
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
        return moment.astimezone(UTC)

    def _json_in(self, value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    def _user(self, row: Row) -> User:
        return User(id=row["id"], email=row["email"], created_at=self._ts_out(row["created_at"]))  # type: ignore[arg-type]  # a NOT NULL column

    def _account(self, row: Row) -> AccountRecord:
        return AccountRecord(
            account_id=row["account_id"],
            user_id=row["user_id"],
            status=row["status"],
            email=row["email"],
            account_number=row["account_number"],
            created_at=self._ts_out(row["created_at"]),  # type: ignore[arg-type]  # a NOT NULL column
            updated_at=self._ts_out(row["updated_at"]),  # type: ignore[arg-type]  # a NOT NULL column
            closure_requested_at=self._ts_out(row["closure_requested_at"]),
            closed_at=self._ts_out(row["closed_at"]),
            confirmation_code=row["confirmation_code"],
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
            with unavailable_when_down(), self.db.transaction():
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
                return EmailClaim(email=wanted, user_id=row["user_id"], new=taken == 1)
        raise Unavailable(f"the claim on {wanted} kept changing; try again", code="store_contention")

    def release_email(self, user_id: str, email: str) -> None:
        wanted = normalize_email(email)
        with unavailable_when_down():
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

    def upsert_company_profiles(self, profiles: list[CompanyProfile]) -> int:
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

    def get_company_profile(self, symbol: str) -> CompanyProfile | None:
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
            found.update({r["symbol"]: self._ts_out(r["updated_at"]) for r in rows if r["updated_at"] is not None})
        return found
