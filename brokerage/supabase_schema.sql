-- Tables of the Clera store for Supabase (CLERA_STORE=supabase): run in the SQL editor, and again after
-- an upgrade (every statement can be repeated). Same DDL as SqlStore's PostgreSQL migration
-- (brokerage/sql_store.py, component "store"); tests/test_store_contract.py checks that the two stay identical.
-- Version 1: users, account ownership, company profiles.
CREATE TABLE IF NOT EXISTS app_users (
    id TEXT PRIMARY KEY,
    email TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS user_accounts (
    account_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES app_users (id),
    status TEXT NOT NULL DEFAULT 'submitted' CHECK (status IN ('active', 'approved', 'closed', 'pending_closure', 'rejected', 'submitted')),
    email TEXT,
    account_number TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    closure_requested_at TIMESTAMPTZ,
    closed_at TIMESTAMPTZ,
    confirmation_code TEXT
);
CREATE INDEX IF NOT EXISTS user_accounts_user_id_idx ON user_accounts (user_id);
CREATE INDEX IF NOT EXISTS user_accounts_email_idx ON user_accounts (email);
CREATE TABLE IF NOT EXISTS company_profiles (
    symbol TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    sector TEXT,
    industries JSONB NOT NULL DEFAULT '[]',
    description TEXT,
    isin TEXT,
    country TEXT,
    facts JSONB NOT NULL DEFAULT '{}',
    source TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE app_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE company_profiles ENABLE ROW LEVEL SECURITY;
-- Version 2: one account per email (a unique index) and the applicants' claims on emails.
CREATE UNIQUE INDEX IF NOT EXISTS user_accounts_email_key ON user_accounts (email);
DROP INDEX IF EXISTS user_accounts_email_idx;
CREATE TABLE IF NOT EXISTS email_claims (
    email TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES app_users (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE email_claims ENABLE ROW LEVEL SECURITY;
