"""The SQL of `SqlStore`'s tables (component "store"), one list of migration steps per dialect.

`{ts}`, `{now}` and `{json}` differ per dialect; `schema_sql("postgres")` is what ships as
brokerage/supabase_schema.sql, so the two PostgreSQL paths (SqlStore, SupabaseStore) share one DDL.
"""

from __future__ import annotations

from brokerage.store import ONBOARDING_STATUSES

_STATUS_LIST = ", ".join(f"'{s}'" for s in sorted(ONBOARDING_STATUSES))

# Version 1. The users and the email claims are this project's own tables on either layout (see clera_store.py).
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


# Version 4: which Plaid Item backs a bank link (ACH relationship) made through Plaid, and what Plaid's
# webhooks last said of it (`last_event`, e.g. "ITEM/ERROR ITEM_LOGIN_REQUIRED"): `needs_relink` while the
# user must go through Link again. The broker holds the relationship itself; this table only adds what
# the broker has no place for. The Clera layout has it too, without the reference to `user_accounts`.
BANK_LINKS_DDL = """CREATE TABLE IF NOT EXISTS bank_links (
    relationship_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL{account_ref},
    item_id TEXT NOT NULL,
    needs_relink {bool} NOT NULL DEFAULT {false},
    last_event TEXT,
    created_at {ts} NOT NULL{now},
    updated_at {ts} NOT NULL{now}
);
CREATE INDEX IF NOT EXISTS bank_links_account_id_idx ON bank_links (account_id);
CREATE INDEX IF NOT EXISTS bank_links_item_id_idx ON bank_links (item_id);
"""


# Supabase serves every public table over REST, to the browser's anon key too: row level security
# with no policy keeps these tables to the service role (and to the owner SqlStore connects as).
def rls(*tables: str) -> str:
    return "".join(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;\n" for t in tables)


_DIALECT_TYPES = {
    "postgres": {
        "ts": "TIMESTAMPTZ", "now": " DEFAULT now()", "json": "JSONB", "bool": "BOOLEAN", "false": "false",
        "rls": rls("app_users", "user_accounts", "company_profiles"), "rls_v2": rls("email_claims"),
        "rls_v4": rls("bank_links"),
    },
    "sqlite": {
        "ts": "TEXT", "now": "", "json": "TEXT", "bool": "INTEGER", "false": "0", "rls": "", "rls_v2": "", "rls_v4": "",
    },
}


def bank_links_sql(dialect: str, *, own_accounts: bool = True) -> str:
    """The `bank_links` table: version 4 here; step 3 of the Clera layout, whose accounts live in the
    frontend's `user_onboarding` (`own_accounts=False`: nothing to reference)."""
    account_ref = " REFERENCES user_accounts (account_id)" if own_accounts else ""
    return (BANK_LINKS_DDL + "{rls_v4}").format(**_DIALECT_TYPES[dialect], account_ref=account_ref)


def schema_sql(dialect: str) -> list[str]:
    """The migration steps for one dialect ("postgres" or "sqlite")."""
    steps = [step.format(**_DIALECT_TYPES[dialect]).strip() + "\n" for step in (_V1, _V2)] + [_v3(dialect)]
    return [*steps, bank_links_sql(dialect)]
