-- Tables of the Clera store for Supabase (CLERA_STORE=supabase): run in the SQL editor, and again after
-- an upgrade (every statement can be repeated). Same DDL as SqlStore's PostgreSQL migration
-- (brokerage/store_schema.py, component "store"); tests/test_store_contract.py checks that the two stay identical.
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
-- Version 3: company_profiles in the seed's shape (its FMP collector's columns); only this project's old
-- table is converted (it has `industries`): an existing Clera company_profiles is left as it is.
DO $$
BEGIN
IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'company_profiles' AND column_name = 'industries') THEN
    ALTER TABLE company_profiles RENAME COLUMN name TO company_name;
    ALTER TABLE company_profiles ADD COLUMN industry TEXT;
    UPDATE company_profiles SET industry = industries ->> 0;
    ALTER TABLE company_profiles DROP COLUMN industries;
    ALTER TABLE company_profiles ADD COLUMN price DOUBLE PRECISION;
    ALTER TABLE company_profiles ADD COLUMN beta DOUBLE PRECISION;
    ALTER TABLE company_profiles ADD COLUMN vol_avg DOUBLE PRECISION;
    ALTER TABLE company_profiles ADD COLUMN market_cap DOUBLE PRECISION;
    ALTER TABLE company_profiles ADD COLUMN last_div DOUBLE PRECISION;
    ALTER TABLE company_profiles ADD COLUMN range TEXT;
    ALTER TABLE company_profiles ADD COLUMN changes DOUBLE PRECISION;
    ALTER TABLE company_profiles ADD COLUMN currency TEXT;
    ALTER TABLE company_profiles ADD COLUMN cik TEXT;
    ALTER TABLE company_profiles ADD COLUMN cusip TEXT;
    ALTER TABLE company_profiles ADD COLUMN exchange TEXT;
    ALTER TABLE company_profiles ADD COLUMN exchange_short_name TEXT;
    ALTER TABLE company_profiles ADD COLUMN website TEXT;
    ALTER TABLE company_profiles ADD COLUMN ceo TEXT;
    ALTER TABLE company_profiles ADD COLUMN full_time_employees TEXT;
    ALTER TABLE company_profiles ADD COLUMN phone TEXT;
    ALTER TABLE company_profiles ADD COLUMN address TEXT;
    ALTER TABLE company_profiles ADD COLUMN city TEXT;
    ALTER TABLE company_profiles ADD COLUMN state TEXT;
    ALTER TABLE company_profiles ADD COLUMN zip TEXT;
    ALTER TABLE company_profiles ADD COLUMN dcf_diff DOUBLE PRECISION;
    ALTER TABLE company_profiles ADD COLUMN dcf DOUBLE PRECISION;
    ALTER TABLE company_profiles ADD COLUMN image TEXT;
    ALTER TABLE company_profiles ADD COLUMN ipo_date DATE;
    ALTER TABLE company_profiles ADD COLUMN default_image BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE company_profiles ADD COLUMN is_etf BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE company_profiles ADD COLUMN is_actively_trading BOOLEAN NOT NULL DEFAULT true;
    ALTER TABLE company_profiles ADD COLUMN is_adr BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE company_profiles ADD COLUMN is_fund BOOLEAN NOT NULL DEFAULT false;
END IF;
END $$;
-- Version 4: the Plaid Item behind each bank link and what Plaid's webhooks last said of it.
CREATE TABLE IF NOT EXISTS bank_links (
    relationship_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES user_accounts (account_id),
    item_id TEXT NOT NULL,
    needs_relink BOOLEAN NOT NULL DEFAULT false,
    last_event TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bank_links_account_id_idx ON bank_links (account_id);
CREATE INDEX IF NOT EXISTS bank_links_item_id_idx ON bank_links (item_id);
ALTER TABLE bank_links ENABLE ROW LEVEL SECURITY;
