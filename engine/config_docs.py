"""What each setting means: the help texts of the settings table and the README table made from them.

A test (tests/test_config.py) checks that every variable has a text here and that the README's table
is the one `clera config --markdown` prints.
"""

from __future__ import annotations

import msgspec

from engine.config import Settings

DOCS: dict[str, str] = {
    (
        "CLERA_DATA_DIR"
    ): (
        "Folder for the SQLite store and ledger, the embedded Redis socket, the replay position and local state."
    ),
    "RAY_ADDRESS": "Ray cluster to join (`auto` on a cluster node); unset starts a local Ray.",
    "CLERA_RAY_NAMESPACE": "Ray namespace of the named engine actors and the Serve app.",
    "REDIS_URL": "External Redis (required on a cluster); unset starts an embedded redis-server.",
    "REDIS_HOST": "External Redis host, used when REDIS_URL is unset.",
    "REDIS_PORT": "Port for REDIS_HOST.",
    "DATABASE_URL": "PostgreSQL URL for the store and the paper ledger; unset uses SQLite in CLERA_DATA_DIR.",
    "CLERA_STORE": "`sql` (SQLite or DATABASE_URL) or `supabase` (Supabase REST via supabase-py).",
    (
        "CLERA_LOG_FORMAT"
    ): (
        "`text`, or `json`: one JSON object a line with the account id, user id and thread id a record names."
    ),
    "CLERA_SCHEMA": (
        "Store layout: `own` (this project's tables), `clera` (an existing Clera database: accounts in "
        "`user_onboarding`), `auto` (`clera` when the database has `user_onboarding`)."
    ),
    "CLERA_FEED": "Market data: `replay` (real daily prices), `simulated` (seeded GBM) or `alpaca` (live).",
    "CLERA_REPLAY_START": "First replayed trading day (data covers 2000-03-01..2013-03-01; FB from 2012-05-18).",
    "CLERA_REPLAY_SESSION_SECONDS": "Wall-clock seconds per replayed trading day.",
    "CLERA_REPLAY_OPEN_FRACTION": "Share of each replayed day during which the market is open.",
    "CLERA_REPLAY_EPOCH": (
        "Unix time at which the replay starts; unset: `clera serve` sets it for all its processes so the persisted "
        "paper world continues where it stopped (`--fresh`: a new world from CLERA_REPLAY_START)."
    ),
    "CLERA_REPLAY_SYMBOLS": "Symbols replayed from the shipped price file.",
    "CLERA_PINNED_SYMBOLS": (
        "Symbols always subscribed and priced though nobody holds them (first buys need a price); unset: the "
        "replay symbols with CLERA_FEED=replay, none otherwise."
    ),
    "CLERA_TICK_HZ": "Replay ticks per second per symbol.",
    "CLERA_SIM_SYMBOLS": "Number of symbols of the simulated feed.",
    "CLERA_SIM_TICKS_PER_S": "Total ticks per second offered by the simulated feed.",
    "CLERA_SIM_SEED": "Seed of the simulated feed.",
    "CLERA_ALPACA_DATA_FEED": "Alpaca stock feed: `iex` or `sip`.",
    "CLERA_ALPACA_STREAM_URL": "Override of Alpaca's market-data WebSocket URL (a stand-in in tests).",
    "CLERA_ALPACA_DATA_URL": "Override of Alpaca's historical-data REST URL (previous closes).",
    "CLERA_ALPACA_DATA_TIMEOUT_S": "Seconds without data before the stream is considered silent and reconnected.",
    "CLERA_SYMBOL_SHARDS": "Number of SymbolShard actors.",
    "CLERA_PORTFOLIO_SHARDS": "Number of PortfolioShard actors.",
    "CLERA_FLUSH_MS": "Batch flush interval of the hops between actors (each flush is a Ray call).",
    "CLERA_BATCH_MAX": "Size cap that flushes a batch before its timer.",
    "CLERA_PUBLISH_HZ": "Most live snapshots per second per subscribed account.",
    (
        "CLERA_PUBLISH_BUDGET"
    ): (
        "Most live snapshots per second per PortfolioShard; more watchers share it at a lower rate each."
    ),
    "CLERA_IDLE_REFRESH_S": "Refresh period of `portfolio:last:{account}` for accounts nobody watches.",
    "CLERA_INTEREST_TTL_S": "Lifetime of a subscriber's interest key; subscribers refresh it.",
    "CLERA_POSITIONS": "Position source: `broker` (the configured broker) or `file` (demo JSON).",
    "CLERA_DEMO_ACCOUNTS_FILE": "Demo accounts JSON for CLERA_POSITIONS=file; unset uses the packaged one.",
    "CLERA_HOST": "Address the HTTP/WebSocket gateway binds to.",
    "CLERA_PORT": "Port of the HTTP/WebSocket gateway.",
    "BACKEND_API_KEY": "Service API key (`X-API-Key`); unset: generated and printed by `clera serve`.",
    "SUPABASE_JWT_SECRET": "HS256 secret of user JWTs; unset: generated and printed by `clera serve`.",
    "HEARTBEAT_INTERVAL": "Seconds between server pings on a WebSocket.",
    "CONNECTION_TIMEOUT": "Seconds of silence after which a WebSocket peer is dropped.",
    "CLERA_SERVE_MIN_REPLICAS": "Fewest gateway replicas.",
    "CLERA_SERVE_MAX_REPLICAS": "Most gateway replicas.",
    "CLERA_SERVE_MAX_ONGOING": "max_ongoing_requests per replica (each open WebSocket counts as one).",
    "CLERA_SERVE_TARGET_ONGOING": "Autoscaling target of ongoing requests (open sockets) per replica.",
    "CLERA_SERVE_DIRECT_INGRESS": (
        "Each gateway replica also serves HTTP/WebSockets on its own port, skipping Serve's proxy (`clera serve`; "
        "on a cluster set the RAY_SERVE_* variables of `cluster.yaml`)."
    ),
    "CLERA_DIRECT_PORT": "Direct port of the first gateway replica on a node; further replicas take the next ones.",
    "CLERA_NATIVE_WS": (
        "Each gateway replica also serves `/ws/portfolio` from its own WebSocket server, frames written straight to "
        "the sockets instead of through ASGI, on a port of CLERA_WS_PORT's range."
    ),
    "CLERA_WS_PORT": (
        "WebSocket port of the first gateway replica on a node (CLERA_NATIVE_WS); each replica binds the first free "
        "one of CLERA_WS_PORT..CLERA_WS_PORT+100."
    ),
    "FINANCIAL_MODELING_PREP_API_KEY": (
        "Financial Modeling Prep key: `clera profiles collect` and live lookups on `/api/company/{ticker}`; unset: "
        "offline profiles only."
    ),
    "CLERA_FMP_URL": "Base URL of FMP's API (a stand-in in tests).",
    (
        "CLERA_FMP_RATE_LIMIT"
    ): (
        "Most FMP requests per CLERA_FMP_RATE_WINDOW_S, per process (FMP's plan limit; the seed used 270 a minute)."
    ),
    "CLERA_FMP_RATE_WINDOW_S": "Window of CLERA_FMP_RATE_LIMIT, in seconds.",
    "CLERA_FMP_TIMEOUT_S": "Seconds before one FMP request is abandoned.",
    "CLERA_FMP_ATTEMPTS": "Tries of one FMP request on 429, 5xx or a network error (Retry-After honoured).",
    "CLERA_FMP_BACKOFF_S": "First backoff between FMP retries without Retry-After (doubles, jittered, at most 30 s).",
    (
        "CLERA_COMPANY_CACHE_TTL_S"
    ): (
        "Seconds a live FMP profile and quote are reused by `/api/company` and the agents (0: no cache)."
    ),
    "CLERA_COMPANY_LIVE_WAIT_S": (
        "Most seconds a live company lookup waits for an FMP request slot before answering from the store (`stale: "
        "true`)."
    ),
    "CLERA_PROFILE_MAX_AGE_S": "Age under which `clera profiles collect` skips a stored FMP profile (resuming a run).",
    "CLERA_CLOSURE_PDT_CHECK": "Refuse to close an account under the pattern-day-trader restriction (off by default).",
    "CLERA_CLOSURE_WAKE_S": "How often (wall seconds) the closure orchestrator wakes to advance unfinished closures.",
    (
        "CLERA_CLOSURE_MAX_TRANSFER_ATTEMPTS"
    ): (
        "Times a rejected or returned closure withdrawal is retried before the closure fails."
    ),
    "CLERA_SMTP_HOST": "SMTP server for emails; unset writes them as .eml files to CLERA_DATA_DIR/outbox.",
    "CLERA_SMTP_PORT": "SMTP port.",
    "CLERA_SMTP_USER": "SMTP user (optional).",
    "CLERA_SMTP_PASSWORD": "SMTP password (optional).",
    "CLERA_SMTP_STARTTLS": "Use STARTTLS with the SMTP server.",
    "CLERA_EMAIL_FROM": "From address of the emails.",
    "CLERA_LLM": (
        "Agent model: `offline` (deterministic intent model, no network) or `openai` (any OpenAI-compatible "
        "endpoint)."
    ),
    (
        "CLERA_LLM_BASE_URL"
    ): (
        "Base URL of the OpenAI-compatible server (vLLM, Ollama, llama.cpp: `http://host:port/v1`); unset: OpenAI."
    ),
    "CLERA_LLM_MODEL": "Model name sent to the OpenAI-compatible endpoint.",
    "OPENAI_API_KEY": "API key of the OpenAI-compatible endpoint (local servers usually accept any value).",
    "CLERA_LLM_TIMEOUT_S": "Seconds before a model call is abandoned.",
    "CLERA_CONFIRM_TTL_S": "Seconds a trade confirmation stays valid; a later confirm is refused (409).",
    "CLERA_RISK_FREE_RATE": "Annual risk-free rate of the Sharpe ratio (0.02 = 2%).",
    "CLERA_AGENT_MIN_REPLICAS": "Fewest AgentGraph replicas.",
    "CLERA_AGENT_MAX_REPLICAS": "Most AgentGraph replicas.",
    "CLERA_AGENT_NUM_CPUS": "CPUs reserved by each AgentGraph replica.",
    "CLERA_AGENT_MAX_ONGOING": "max_ongoing_requests per AgentGraph replica (its autoscaling target is half).",
    "CLERA_BROKER": "`paper` (embedded ledger) or `alpaca` (Alpaca Broker API).",
    "BROKER_API_KEY": "Alpaca Broker API key (also used for market data).",
    "BROKER_SECRET_KEY": "Alpaca Broker API secret.",
    "ALPACA_ENVIRONMENT": "`sandbox` or `production`.",
    "CLERA_ALPACA_BROKER_URL": "Override of the Broker API base URL (a stand-in in tests).",
    "CLERA_ALPACA_RESYNC_S": "Period of the position re-sync from Alpaca.",
    "CLERA_ACH_DAILY_LIMIT": "Most dollars withdrawn by ACH per account per day (paper broker).",
    "CLERA_PDT_ENABLED": "Enforce the pattern-day-trader rule (paper broker).",
    "CLERA_PDT_EQUITY_THRESHOLD": "Equity under which the PDT rule applies.",
    "CLERA_PDT_MAX_DAY_TRADES": "Day trades allowed in 5 trading days under the threshold.",
    "PLAID_CLIENT_ID": "Plaid client id; unset disables Plaid (503 on its routes).",
    "PLAID_SECRET": "Plaid secret.",
    "PLAID_ENV": "`sandbox` or `production` (plaid-python has no development environment).",
    "CLERA_PLAID_HOST": "Override of Plaid's API host (a stand-in in tests).",
    "CLERA_PLAID_WEBHOOK_VERIFY": "Verify the `Plaid-Verification` JWT of webhooks.",
    "BACKEND_PUBLIC_URL": "Public URL of this backend, for Plaid webhooks and redirects.",
    "SUPABASE_URL": "Supabase project URL for CLERA_STORE=supabase.",
    "SUPABASE_SERVICE_ROLE_KEY": "Supabase service-role key for CLERA_STORE=supabase.",
}


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in msgspec.structs.fields(Settings):
        default = "" if field.default in (None, msgspec.NODEFAULT) else str(field.default)
        rows.append(
            f"| `{field.encode_name}` | {f'`{default}`' if default else '(unset)'} | {DOCS[field.encode_name]} |"
        )
    return "\n".join(rows)
