"""The paper ledger's tables (migration component "paper"), valid on SQLite and PostgreSQL.

Money and quantities are stored as decimal strings (TEXT) and computed in Python with Decimal, so
both engines hold exactly the same digits; times are unix seconds (DOUBLE PRECISION).
`paper_orders.reserve` holds what an open order sets aside: dollars for a buy, shares for a sell.
`paper_fills.seq` numbers an account's fills in the order they were applied (several queued
orders fill at the same moment at the open, and average cost depends on the order).
"""

from __future__ import annotations

COMPONENT = "paper"

STEPS: list[str] = [
    """
    CREATE TABLE paper_accounts (
        id TEXT PRIMARY KEY,
        account_number TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        owner_name TEXT NOT NULL,
        application TEXT NOT NULL,
        cash TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE paper_account_events (
        account_id TEXT NOT NULL REFERENCES paper_accounts (id),
        status TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        note TEXT
    );
    CREATE INDEX paper_account_events_account ON paper_account_events (account_id);
    CREATE TABLE paper_ach (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES paper_accounts (id),
        status TEXT NOT NULL,
        owner_name TEXT NOT NULL,
        bank_account_type TEXT NOT NULL,
        bank_account_number TEXT NOT NULL,
        bank_routing_number TEXT NOT NULL,
        nickname TEXT,
        bank_name TEXT,
        processor_token TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE UNIQUE INDEX paper_ach_one_active ON paper_ach (account_id) WHERE status <> 'CANCELED';
    CREATE TABLE paper_transfers (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES paper_accounts (id),
        relationship_id TEXT,
        amount TEXT NOT NULL,
        direction TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        ach_day TEXT NOT NULL,
        session TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION NOT NULL,
        complete_at DOUBLE PRECISION NOT NULL,
        completed_at DOUBLE PRECISION
    );
    CREATE INDEX paper_transfers_account ON paper_transfers (account_id, status);
    CREATE TABLE paper_orders (
        id TEXT PRIMARY KEY,
        client_order_id TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES paper_accounts (id),
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        type TEXT NOT NULL,
        time_in_force TEXT NOT NULL,
        status TEXT NOT NULL,
        qty TEXT,
        notional TEXT,
        limit_price TEXT,
        reserve TEXT NOT NULL,
        filled_qty TEXT NOT NULL,
        filled_avg_price TEXT,
        reason TEXT,
        session TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        filled_at DOUBLE PRECISION,
        UNIQUE (account_id, client_order_id)
    );
    CREATE INDEX paper_orders_account ON paper_orders (account_id, status);
    CREATE TABLE paper_positions (
        account_id TEXT NOT NULL REFERENCES paper_accounts (id),
        symbol TEXT NOT NULL,
        qty TEXT NOT NULL,
        cost_basis TEXT NOT NULL,
        PRIMARY KEY (account_id, symbol)
    );
    CREATE TABLE paper_fills (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES paper_accounts (id),
        order_id TEXT NOT NULL REFERENCES paper_orders (id),
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        qty TEXT NOT NULL,
        price TEXT NOT NULL,
        amount TEXT NOT NULL,
        session TEXT NOT NULL,
        settle_date TEXT NOT NULL,
        day_trade INTEGER NOT NULL,
        filled_at DOUBLE PRECISION NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX paper_fills_account ON paper_fills (account_id, session)
    """,
    # v2: what the ledger stepper asks on every wake-up (`PaperBroker.next_due`, `process_due`) is
    # answered from indexes instead of scans of every transfer, order and fill ever made
    """
    CREATE INDEX paper_accounts_status ON paper_accounts (status);
    CREATE INDEX paper_transfers_status ON paper_transfers (status);
    CREATE INDEX paper_orders_status ON paper_orders (status);
    CREATE INDEX paper_fills_unsettled_sells ON paper_fills (settle_date) WHERE side = 'sell'
    """,
]
