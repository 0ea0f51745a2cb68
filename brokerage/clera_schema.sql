-- This project's additions to an existing Clera database for CLERA_SCHEMA=clera with CLERA_STORE=supabase: run in
-- the SQL editor (every statement can be repeated). Same DDL as CleraSqlStore's migration (brokerage/clera_schema.py,
-- component "store_clera"); tests/test_store_contract.py checks that the two stay identical.
-- Step 1: this project's own tables beside the frontend's, and company_profiles only if there is none.
CREATE TABLE IF NOT EXISTS app_users (
    id TEXT PRIMARY KEY,
    email TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS email_claims (
    email TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES app_users (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS account_emails (
    email TEXT PRIMARY KEY,
    account_id TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS account_claims (
    account_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE app_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_claims ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_emails ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_claims ENABLE ROW LEVEL SECURITY;
CREATE TABLE IF NOT EXISTS company_profiles (
    symbol TEXT PRIMARY KEY, company_name TEXT NOT NULL, industry TEXT, description TEXT, isin TEXT, country TEXT,
    sector TEXT, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
price DOUBLE PRECISION, beta DOUBLE PRECISION, vol_avg DOUBLE PRECISION, market_cap DOUBLE PRECISION, last_div DOUBLE PRECISION, range TEXT,
changes DOUBLE PRECISION, currency TEXT, cik TEXT, cusip TEXT, exchange TEXT, exchange_short_name TEXT, website TEXT,
ceo TEXT, full_time_employees TEXT, phone TEXT, address TEXT, city TEXT, state TEXT, zip TEXT, dcf_diff DOUBLE PRECISION,
dcf DOUBLE PRECISION, image TEXT, ipo_date DATE, default_image BOOLEAN NOT NULL DEFAULT false,
is_etf BOOLEAN NOT NULL DEFAULT false, is_actively_trading BOOLEAN NOT NULL DEFAULT true,
is_adr BOOLEAN NOT NULL DEFAULT false, is_fund BOOLEAN NOT NULL DEFAULT false
);
-- Step 2: the seed's closure additions to user_onboarding (its enum values and columns, when missing).
DO $$
BEGIN
IF to_regtype('onboarding_status') IS NOT NULL THEN
    ALTER TYPE onboarding_status ADD VALUE IF NOT EXISTS 'pending_closure';
    ALTER TYPE onboarding_status ADD VALUE IF NOT EXISTS 'closed';
END IF;
ALTER TABLE user_onboarding ADD COLUMN IF NOT EXISTS closure_initiated_at TIMESTAMPTZ;
ALTER TABLE user_onboarding ADD COLUMN IF NOT EXISTS closure_completed_at TIMESTAMPTZ;
ALTER TABLE user_onboarding ADD COLUMN IF NOT EXISTS closure_confirmation_code TEXT;
END $$;
-- Step 3: the Plaid Item behind each bank link and what Plaid's webhooks last said of it.
CREATE TABLE IF NOT EXISTS bank_links (
    relationship_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    needs_relink BOOLEAN NOT NULL DEFAULT false,
    last_event TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bank_links_account_id_idx ON bank_links (account_id);
CREATE INDEX IF NOT EXISTS bank_links_item_id_idx ON bank_links (item_id);
ALTER TABLE bank_links ENABLE ROW LEVEL SECURITY;
