"""The SQL of `CleraSqlStore`'s additions to an existing Clera database (component "store_clera").

PostgreSQL only; the same steps ship as brokerage/clera_schema.sql for CLERA_STORE=supabase (a test
keeps the two identical). The tables are written with the `{ts}`/`{now}` placeholders of
`brokerage.store_schema`, which this project's own tables share.
"""

from __future__ import annotations

from brokerage.store_schema import (
    APP_USERS_DDL,
    EMAIL_CLAIMS_DDL,
    PROFILE_TYPES,
    SEED_PROFILE_ADDED_DDL,
    bank_links_sql,
    rls,
)

_TYPES = {"ts": "TIMESTAMPTZ", "now": " DEFAULT now()"}
# Which account an email opened (one account per email: the frontend's table may get no unique index).
ACCOUNT_EMAILS_DDL = """CREATE TABLE IF NOT EXISTS account_emails (
    email TEXT PRIMARY KEY,
    account_id TEXT NOT NULL UNIQUE,
    created_at {ts} NOT NULL{now}
);
"""
# Which writer attaches an account id to a person's onboarding row (see CleraSqlStore.add_account).
ACCOUNT_CLAIMS_DDL = """CREATE TABLE IF NOT EXISTS account_claims (
    account_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at {ts} NOT NULL{now}
);
"""
# Step 1: this project's own tables, and company_profiles in the seed's shape only if the database
# has none (an existing one is used as it is).
_CLERA_V1 = (
    "".join(ddl.format(**_TYPES) for ddl in (APP_USERS_DDL, EMAIL_CLAIMS_DDL, ACCOUNT_EMAILS_DDL, ACCOUNT_CLAIMS_DDL))
    + rls("app_users", "email_claims", "account_emails", "account_claims")
    + """CREATE TABLE IF NOT EXISTS company_profiles (
    symbol TEXT PRIMARY KEY, company_name TEXT NOT NULL, industry TEXT, description TEXT, isin TEXT, country TEXT,
    sector TEXT, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
"""
    + SEED_PROFILE_ADDED_DDL.format(**PROFILE_TYPES["postgres"])
    + "\n);\n"
)
# Step 2: the seed's own closure additions to the frontend's table (its SQL, made repeatable).
_CLERA_V2 = """DO $$
BEGIN
IF to_regtype('onboarding_status') IS NOT NULL THEN
    ALTER TYPE onboarding_status ADD VALUE IF NOT EXISTS 'pending_closure';
    ALTER TYPE onboarding_status ADD VALUE IF NOT EXISTS 'closed';
END IF;
ALTER TABLE user_onboarding ADD COLUMN IF NOT EXISTS closure_initiated_at TIMESTAMPTZ;
ALTER TABLE user_onboarding ADD COLUMN IF NOT EXISTS closure_completed_at TIMESTAMPTZ;
ALTER TABLE user_onboarding ADD COLUMN IF NOT EXISTS closure_confirmation_code TEXT;
END $$;
"""
# Step 3: this project's record of the Plaid Item behind each bank link (as in the own layout).
CLERA_SCHEMA_SQL = (_CLERA_V1, _CLERA_V2, bank_links_sql("postgres", own_accounts=False))
