"""One settings table for the whole system, read from the environment and `.env`.

Every variable has a default that works on a fresh machine (the embedded defaults of docs/architecture.md).
A bad value fails at start-up with the variable's name and the reason, never later in a hot path.
The README's configuration table is generated from this module (`clera config --markdown`).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from dotenv import dotenv_values

from engine.prices_data import SHIPPED_FIRST_DAY, SHIPPED_LAST_DAY

Positive = msgspec.Meta(gt=0)
AtLeastOne = msgspec.Meta(ge=1)


class ConfigError(ValueError):
    """A configuration variable has a value the system cannot run with."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Field name -> environment variable via `msgspec.field(name=...)`; see `DOCS` for meanings."""

    # --- runtime and storage -------------------------------------------------------------
    data_dir: str = msgspec.field(default=".clera", name="CLERA_DATA_DIR")
    ray_address: str | None = msgspec.field(default=None, name="RAY_ADDRESS")
    ray_namespace: str = msgspec.field(default="clera", name="CLERA_RAY_NAMESPACE")
    redis_url: str | None = msgspec.field(default=None, name="REDIS_URL")
    redis_host: str | None = msgspec.field(default=None, name="REDIS_HOST")
    redis_port: Annotated[int, Positive] = msgspec.field(default=6379, name="REDIS_PORT")
    database_url: str | None = msgspec.field(default=None, name="DATABASE_URL")
    store: Literal["sql", "supabase"] = msgspec.field(default="sql", name="CLERA_STORE")
    log_format: Literal["text", "json"] = msgspec.field(default="text", name="CLERA_LOG_FORMAT")
    schema: Literal["auto", "own", "clera"] = msgspec.field(default="auto", name="CLERA_SCHEMA")

    # --- market data and the clock ---------------------------------------------------------
    feed: Literal["replay", "simulated", "alpaca"] = msgspec.field(default="replay", name="CLERA_FEED")
    replay_start: dt.date = msgspec.field(default=dt.date(2012, 6, 1), name="CLERA_REPLAY_START")
    replay_session_seconds: Annotated[float, Positive] = msgspec.field(
        default=60.0, name="CLERA_REPLAY_SESSION_SECONDS"
    )
    replay_open_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = msgspec.field(
        default=0.8, name="CLERA_REPLAY_OPEN_FRACTION"
    )
    replay_epoch: float | None = msgspec.field(default=None, name="CLERA_REPLAY_EPOCH")
    replay_symbols: str = msgspec.field(default="AAPL,MSFT,IBM,GOOG,FB", name="CLERA_REPLAY_SYMBOLS")
    pinned_symbols: str | None = msgspec.field(default=None, name="CLERA_PINNED_SYMBOLS")
    tick_hz: Annotated[float, Positive] = msgspec.field(default=4.0, name="CLERA_TICK_HZ")
    sim_symbols: Annotated[int, AtLeastOne] = msgspec.field(default=500, name="CLERA_SIM_SYMBOLS")
    sim_ticks_per_s: Annotated[float, Positive] = msgspec.field(default=1000.0, name="CLERA_SIM_TICKS_PER_S")
    sim_seed: int = msgspec.field(default=7, name="CLERA_SIM_SEED")
    alpaca_data_feed: Literal["iex", "sip"] = msgspec.field(default="iex", name="CLERA_ALPACA_DATA_FEED")
    alpaca_stream_url: str | None = msgspec.field(default=None, name="CLERA_ALPACA_STREAM_URL")
    alpaca_data_url: str | None = msgspec.field(default=None, name="CLERA_ALPACA_DATA_URL")
    alpaca_data_timeout_s: Annotated[float, Positive] = msgspec.field(
        default=30.0, name="CLERA_ALPACA_DATA_TIMEOUT_S"
    )

    # --- realtime engine -------------------------------------------------------------------
    symbol_shards: Annotated[int, AtLeastOne] = msgspec.field(default=2, name="CLERA_SYMBOL_SHARDS")
    portfolio_shards: Annotated[int, AtLeastOne] = msgspec.field(default=2, name="CLERA_PORTFOLIO_SHARDS")
    flush_ms: Annotated[float, Positive] = msgspec.field(default=10.0, name="CLERA_FLUSH_MS")
    batch_max: Annotated[int, AtLeastOne] = msgspec.field(default=5000, name="CLERA_BATCH_MAX")
    publish_hz: Annotated[float, Positive] = msgspec.field(default=10.0, name="CLERA_PUBLISH_HZ")
    publish_budget: Annotated[float, Positive] = msgspec.field(default=12_000.0, name="CLERA_PUBLISH_BUDGET")
    idle_refresh_s: Annotated[float, Positive] = msgspec.field(default=10.0, name="CLERA_IDLE_REFRESH_S")
    interest_ttl_s: Annotated[float, Positive] = msgspec.field(default=30.0, name="CLERA_INTEREST_TTL_S")
    positions: Literal["file", "broker"] = msgspec.field(default="broker", name="CLERA_POSITIONS")
    demo_accounts_file: str | None = msgspec.field(default=None, name="CLERA_DEMO_ACCOUNTS_FILE")

    # --- gateway ---------------------------------------------------------------------------
    host: str = msgspec.field(default="127.0.0.1", name="CLERA_HOST")
    port: Annotated[int, Positive] = msgspec.field(default=8000, name="CLERA_PORT")
    backend_api_key: str | None = msgspec.field(default=None, name="BACKEND_API_KEY")
    jwt_secret: str | None = msgspec.field(default=None, name="SUPABASE_JWT_SECRET")
    heartbeat_interval: Annotated[float, Positive] = msgspec.field(default=30.0, name="HEARTBEAT_INTERVAL")
    connection_timeout: Annotated[float, Positive] = msgspec.field(default=300.0, name="CONNECTION_TIMEOUT")
    serve_min_replicas: Annotated[int, AtLeastOne] = msgspec.field(default=1, name="CLERA_SERVE_MIN_REPLICAS")
    serve_max_replicas: Annotated[int, AtLeastOne] = msgspec.field(default=4, name="CLERA_SERVE_MAX_REPLICAS")
    serve_max_ongoing: Annotated[int, AtLeastOne] = msgspec.field(default=10000, name="CLERA_SERVE_MAX_ONGOING")
    serve_target_ongoing: Annotated[int, AtLeastOne] = msgspec.field(
        default=2000, name="CLERA_SERVE_TARGET_ONGOING"
    )
    serve_direct_ingress: bool = msgspec.field(default=True, name="CLERA_SERVE_DIRECT_INGRESS")
    direct_port: Annotated[int, Positive] = msgspec.field(default=8001, name="CLERA_DIRECT_PORT")
    fmp_api_key: str | None = msgspec.field(default=None, name="FINANCIAL_MODELING_PREP_API_KEY")
    fmp_url: str = msgspec.field(default="https://financialmodelingprep.com", name="CLERA_FMP_URL")
    fmp_rate_limit: Annotated[int, AtLeastOne] = msgspec.field(default=270, name="CLERA_FMP_RATE_LIMIT")
    fmp_rate_window_s: Annotated[float, Positive] = msgspec.field(default=60.0, name="CLERA_FMP_RATE_WINDOW_S")
    fmp_timeout_s: Annotated[float, Positive] = msgspec.field(default=10.0, name="CLERA_FMP_TIMEOUT_S")
    fmp_attempts: Annotated[int, AtLeastOne] = msgspec.field(default=4, name="CLERA_FMP_ATTEMPTS")
    fmp_backoff_s: Annotated[float, Positive] = msgspec.field(default=1.0, name="CLERA_FMP_BACKOFF_S")
    company_cache_ttl_s: Annotated[float, msgspec.Meta(ge=0)] = msgspec.field(
        default=300.0, name="CLERA_COMPANY_CACHE_TTL_S"
    )
    company_live_wait_s: Annotated[float, msgspec.Meta(ge=0)] = msgspec.field(
        default=2.0, name="CLERA_COMPANY_LIVE_WAIT_S"
    )
    profile_max_age_s: Annotated[float, msgspec.Meta(ge=0)] = msgspec.field(
        default=7 * 86400.0, name="CLERA_PROFILE_MAX_AGE_S"
    )

    # --- account closure and email ---------------------------------------------------------
    closure_pdt_check: bool = msgspec.field(default=False, name="CLERA_CLOSURE_PDT_CHECK")
    closure_wake_s: Annotated[float, Positive] = msgspec.field(default=5.0, name="CLERA_CLOSURE_WAKE_S")
    closure_max_transfer_attempts: Annotated[int, AtLeastOne] = msgspec.field(
        default=3, name="CLERA_CLOSURE_MAX_TRANSFER_ATTEMPTS"
    )
    smtp_host: str | None = msgspec.field(default=None, name="CLERA_SMTP_HOST")
    smtp_port: Annotated[int, Positive] = msgspec.field(default=587, name="CLERA_SMTP_PORT")
    smtp_user: str | None = msgspec.field(default=None, name="CLERA_SMTP_USER")
    smtp_password: str | None = msgspec.field(default=None, name="CLERA_SMTP_PASSWORD")
    smtp_starttls: bool = msgspec.field(default=True, name="CLERA_SMTP_STARTTLS")
    email_from: str = msgspec.field(default="Clera <support@askclera.com>", name="CLERA_EMAIL_FROM")

    # --- agents ----------------------------------------------------------------------------
    llm: Literal["offline", "openai"] = msgspec.field(default="offline", name="CLERA_LLM")
    llm_base_url: str | None = msgspec.field(default=None, name="CLERA_LLM_BASE_URL")
    llm_model: str = msgspec.field(default="gpt-4o-mini", name="CLERA_LLM_MODEL")
    openai_api_key: str | None = msgspec.field(default=None, name="OPENAI_API_KEY")
    llm_timeout_s: Annotated[float, Positive] = msgspec.field(default=60.0, name="CLERA_LLM_TIMEOUT_S")
    confirm_ttl_s: Annotated[float, Positive] = msgspec.field(default=300.0, name="CLERA_CONFIRM_TTL_S")
    risk_free_rate: Decimal = msgspec.field(
        default=Decimal("0.02"), name="CLERA_RISK_FREE_RATE"
    )
    agent_min_replicas: Annotated[int, AtLeastOne] = msgspec.field(default=1, name="CLERA_AGENT_MIN_REPLICAS")
    agent_max_replicas: Annotated[int, AtLeastOne] = msgspec.field(default=2, name="CLERA_AGENT_MAX_REPLICAS")
    agent_num_cpus: Annotated[float, msgspec.Meta(ge=0)] = msgspec.field(default=0.5, name="CLERA_AGENT_NUM_CPUS")
    agent_max_ongoing: Annotated[int, AtLeastOne] = msgspec.field(default=64, name="CLERA_AGENT_MAX_ONGOING")

    # --- brokerage -------------------------------------------------------------------------
    broker: Literal["paper", "alpaca"] = msgspec.field(default="paper", name="CLERA_BROKER")
    broker_api_key: str | None = msgspec.field(default=None, name="BROKER_API_KEY")
    broker_secret_key: str | None = msgspec.field(default=None, name="BROKER_SECRET_KEY")
    alpaca_environment: Literal["sandbox", "production"] = msgspec.field(
        default="sandbox", name="ALPACA_ENVIRONMENT"
    )
    alpaca_broker_url: str | None = msgspec.field(default=None, name="CLERA_ALPACA_BROKER_URL")
    alpaca_resync_s: Annotated[float, Positive] = msgspec.field(default=60.0, name="CLERA_ALPACA_RESYNC_S")
    ach_daily_limit: Decimal = msgspec.field(
        default=Decimal("50000"), name="CLERA_ACH_DAILY_LIMIT"
    )
    pdt_enabled: bool = msgspec.field(default=True, name="CLERA_PDT_ENABLED")
    pdt_equity_threshold: Decimal = msgspec.field(default=Decimal("25000"), name="CLERA_PDT_EQUITY_THRESHOLD")
    pdt_max_day_trades: Annotated[int, AtLeastOne] = msgspec.field(default=3, name="CLERA_PDT_MAX_DAY_TRADES")
    plaid_client_id: str | None = msgspec.field(default=None, name="PLAID_CLIENT_ID")
    plaid_secret: str | None = msgspec.field(default=None, name="PLAID_SECRET")
    plaid_env: str = msgspec.field(default="sandbox", name="PLAID_ENV")
    plaid_host: str | None = msgspec.field(default=None, name="CLERA_PLAID_HOST")
    plaid_webhook_verify: bool = msgspec.field(default=True, name="CLERA_PLAID_WEBHOOK_VERIFY")
    backend_public_url: str | None = msgspec.field(default=None, name="BACKEND_PUBLIC_URL")
    supabase_url: str | None = msgspec.field(default=None, name="SUPABASE_URL")
    supabase_service_role_key: str | None = msgspec.field(default=None, name="SUPABASE_SERVICE_ROLE_KEY")

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """What a Settings becomes when it crosses a process boundary (a Ray task's or actor's argument,
        a Serve deployment's): its values without the secrets, which the receiving process takes from
        its own environment (see `received_settings`). So no secret is ever in Ray's object store or
        its task and actor listings, and the code that passes settings around needs no care."""
        return (received_settings, (shared_values(self),))

    def __post_init__(self) -> None:
        if self.plaid_env not in ("sandbox", "production"):
            hint = (
                " (plaid-python has no 'development' environment; use 'sandbox' for testing)"
                if self.plaid_env == "development"
                else ""
            )
            raise ConfigError(f"PLAID_ENV={self.plaid_env!r}: must be 'sandbox' or 'production'{hint}")
        if self.plaid_env == "production" and not self.plaid_webhook_verify:
            # Unsigned webhooks are a local-development convenience; in production anyone could forge one.
            raise ConfigError(
                "CLERA_PLAID_WEBHOOK_VERIFY=false is refused with PLAID_ENV='production':"
                " Plaid webhooks must be signature-checked in production"
            )
        if self.feed == "replay" and not SHIPPED_FIRST_DAY <= self.replay_start <= SHIPPED_LAST_DAY:
            raise ConfigError(
                f"CLERA_REPLAY_START={self.replay_start.isoformat()!r}: the shipped prices cover "
                f"{SHIPPED_FIRST_DAY.isoformat()}..{SHIPPED_LAST_DAY.isoformat()}"
            )
        if self.store == "supabase" and not (self.supabase_url and self.supabase_service_role_key):
            raise ConfigError("CLERA_STORE='supabase' needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        if self.broker == "alpaca" and not (self.broker_api_key and self.broker_secret_key):
            raise ConfigError("CLERA_BROKER='alpaca' needs BROKER_API_KEY and BROKER_SECRET_KEY")
        if self.feed == "alpaca" and not (self.broker_api_key and self.broker_secret_key):
            raise ConfigError("CLERA_FEED='alpaca' needs BROKER_API_KEY and BROKER_SECRET_KEY")
        if self.ach_daily_limit <= 0 or self.pdt_equity_threshold < 0:
            raise ConfigError("CLERA_ACH_DAILY_LIMIT must be > 0 and CLERA_PDT_EQUITY_THRESHOLD >= 0")
        if self.llm == "openai" and not (self.openai_api_key or self.llm_base_url):
            raise ConfigError(
                "CLERA_LLM='openai' needs OPENAI_API_KEY (OpenAI) or CLERA_LLM_BASE_URL (a compatible server)"
            )
        if not Decimal(0) <= self.risk_free_rate < 1:
            raise ConfigError(f"CLERA_RISK_FREE_RATE={self.risk_free_rate}: an annual rate in [0, 1), e.g. 0.02 for 2%")
        if self.agent_min_replicas > self.agent_max_replicas:
            raise ConfigError("CLERA_AGENT_MIN_REPLICAS must not exceed CLERA_AGENT_MAX_REPLICAS")
        if self.serve_min_replicas > self.serve_max_replicas:
            raise ConfigError("CLERA_SERVE_MIN_REPLICAS must not exceed CLERA_SERVE_MAX_REPLICAS")
        if self.serve_direct_ingress and not (
            self.direct_port + 100 <= 65535 and not self.direct_port <= self.port <= self.direct_port + 100
        ):
            raise ConfigError(
                f"CLERA_DIRECT_PORT={self.direct_port}: "
                f"the replicas' ports {self.direct_port}..{self.direct_port + 100} "
                f"must be valid and must not include CLERA_PORT={self.port}"
            )

    # --- derived values (kept here so every process derives them the same way) ------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def redis_external_url(self) -> str | None:
        """The external Redis to use, or None for the embedded server."""
        if self.redis_url:
            return self.redis_url
        if self.redis_host:
            return f"redis://{self.redis_host}:{self.redis_port}/0"
        return None

    @property
    def sqlite_path(self) -> Path:
        return self.data_path / "clera.db"

    @property
    def socket_port(self) -> int:
        """Where clients open WebSockets: the first replica's own port with direct ingress, else Serve's proxy."""
        return self.direct_port if self.serve_direct_ingress else self.port

    @property
    def pinned_symbol_list(self) -> list[str]:
        if self.pinned_symbols is None:
            return self.replay_symbol_list if self.feed == "replay" else []
        return [s.strip().upper() for s in self.pinned_symbols.split(",") if s.strip()]

    @property
    def replay_symbol_list(self) -> list[str]:
        return [s.strip().upper() for s in self.replay_symbols.split(",") if s.strip()]


DOCS: dict[str, str] = {
    "CLERA_DATA_DIR": "Folder for the SQLite store and ledger, the embedded Redis socket, the replay position and "
        "local state.",
    "RAY_ADDRESS": "Ray cluster to join (`auto` on a cluster node); unset starts a local Ray.",
    "CLERA_RAY_NAMESPACE": "Ray namespace of the named engine actors and the Serve app.",
    "REDIS_URL": "External Redis (required on a cluster); unset starts an embedded redis-server.",
    "REDIS_HOST": "External Redis host, used when REDIS_URL is unset.",
    "REDIS_PORT": "Port for REDIS_HOST.",
    "DATABASE_URL": "PostgreSQL URL for the store and the paper ledger; unset uses SQLite in CLERA_DATA_DIR.",
    "CLERA_STORE": "`sql` (SQLite or DATABASE_URL) or `supabase` (Supabase REST via supabase-py).",
    "CLERA_LOG_FORMAT": "`text`, or `json`: one JSON object a line with the account id, user id and thread id a "
        "record names.",
    "CLERA_SCHEMA": "Store layout: `own` (this project's tables), `clera` (an existing Clera database: accounts in "
        "`user_onboarding`), `auto` (`clera` when the database has `user_onboarding`).",
    "CLERA_FEED": "Market data: `replay` (real daily prices), `simulated` (seeded GBM) or `alpaca` (live).",
    "CLERA_REPLAY_START": "First replayed trading day (data covers 2000-03-01..2013-03-01; FB from 2012-05-18).",
    "CLERA_REPLAY_SESSION_SECONDS": "Wall-clock seconds per replayed trading day.",
    "CLERA_REPLAY_OPEN_FRACTION": "Share of each replayed day during which the market is open.",
    "CLERA_REPLAY_EPOCH": "Unix time at which the replay starts; unset: `clera serve` sets it for all its processes "
        "so the persisted paper world continues where it stopped (`--fresh`: a new world from CLERA_REPLAY_START).",
    "CLERA_REPLAY_SYMBOLS": "Symbols replayed from the shipped price file.",
    "CLERA_PINNED_SYMBOLS": "Symbols always subscribed and priced though nobody holds them (first buys need a "
        "price); unset: the replay symbols with CLERA_FEED=replay, none otherwise.",
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
    "CLERA_PUBLISH_BUDGET": "Most live snapshots per second per PortfolioShard; more watchers share it at a lower "
        "rate each.",
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
    "CLERA_SERVE_DIRECT_INGRESS": "Each gateway replica also serves HTTP/WebSockets on its own port, skipping "
        "Serve's proxy (`clera serve`; on a cluster set the RAY_SERVE_* variables of `cluster.yaml`).",
    "CLERA_DIRECT_PORT": "Direct port of the first gateway replica on a node; further replicas take the next ones.",
    "FINANCIAL_MODELING_PREP_API_KEY": "Financial Modeling Prep key: `clera profiles collect` and live lookups on "
        "`/api/company/{ticker}`; unset: offline profiles only.",
    "CLERA_FMP_URL": "Base URL of FMP's API (a stand-in in tests).",
    "CLERA_FMP_RATE_LIMIT": "Most FMP requests per CLERA_FMP_RATE_WINDOW_S, per process (FMP's plan limit; the seed "
        "used 270 a minute).",
    "CLERA_FMP_RATE_WINDOW_S": "Window of CLERA_FMP_RATE_LIMIT, in seconds.",
    "CLERA_FMP_TIMEOUT_S": "Seconds before one FMP request is abandoned.",
    "CLERA_FMP_ATTEMPTS": "Tries of one FMP request on 429, 5xx or a network error (Retry-After honoured).",
    "CLERA_FMP_BACKOFF_S": "First backoff between FMP retries without Retry-After (doubles, jittered, at most 30 s).",
    "CLERA_COMPANY_CACHE_TTL_S": "Seconds a live FMP profile and quote are reused by `/api/company` and the agents "
        "(0: no cache).",
    "CLERA_COMPANY_LIVE_WAIT_S": "Most seconds a live company lookup waits for an FMP request slot before answering "
        "from the store (`stale: true`).",
    "CLERA_PROFILE_MAX_AGE_S": "Age under which `clera profiles collect` skips a stored FMP profile (resuming a run).",
    "CLERA_CLOSURE_PDT_CHECK": "Refuse to close an account under the pattern-day-trader restriction (off by default).",
    "CLERA_CLOSURE_WAKE_S": "How often (wall seconds) the closure orchestrator wakes to advance unfinished closures.",
    "CLERA_CLOSURE_MAX_TRANSFER_ATTEMPTS": "Times a rejected or returned closure withdrawal is retried before the "
        "closure fails.",
    "CLERA_SMTP_HOST": "SMTP server for emails; unset writes them as .eml files to CLERA_DATA_DIR/outbox.",
    "CLERA_SMTP_PORT": "SMTP port.",
    "CLERA_SMTP_USER": "SMTP user (optional).",
    "CLERA_SMTP_PASSWORD": "SMTP password (optional).",
    "CLERA_SMTP_STARTTLS": "Use STARTTLS with the SMTP server.",
    "CLERA_EMAIL_FROM": "From address of the emails.",
    "CLERA_LLM": "Agent model: `offline` (deterministic intent model, no network) or `openai` (any OpenAI-compatible "
        "endpoint).",
    "CLERA_LLM_BASE_URL": "Base URL of the OpenAI-compatible server (vLLM, Ollama, llama.cpp: "
        "`http://host:port/v1`); unset: OpenAI.",
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

_ENV_NAMES: tuple[str, ...] = tuple(f.encode_name for f in msgspec.structs.fields(Settings))
SECRETS: frozenset[str] = frozenset({
    "BACKEND_API_KEY", "SUPABASE_JWT_SECRET", "SUPABASE_SERVICE_ROLE_KEY", "BROKER_API_KEY", "BROKER_SECRET_KEY",
    "PLAID_SECRET", "OPENAI_API_KEY", "CLERA_SMTP_PASSWORD", "FINANCIAL_MODELING_PREP_API_KEY",
})
"""Never written to a log, a Ray argument or an answer: each process reads them from its own environment."""
CREDENTIAL_URLS: tuple[str, ...] = ("DATABASE_URL", "REDIS_URL")  # secrets when they carry a password
_LOCATION = re.compile(r" - at `\$\.([A-Z0-9_]+)`")


def _environment(environ: Mapping[str, str] | None, env_file: str | Path | None) -> dict[str, str]:
    """`environ` (default: os.environ) over an optional `.env` file, empty strings meaning unset."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update({k: v for k, v in (os.environ if environ is None else environ).items() if v != ""})
    return {k: v for k, v in values.items() if k in _ENV_NAMES and v != ""}


def _convert(values: dict[str, Any]) -> Settings:
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _LOCATION.search(message)
        if found is None:
            raise ConfigError(message) from None
        name = found.group(1)
        reason = _LOCATION.sub("", message)
        raise ConfigError(f"{name}={values.get(name)!r}: {reason}") from None


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Settings from `environ` (default: os.environ) over an optional `.env` file; empty strings mean unset."""
    return _convert(_environment(environ, env_file))


def is_secret(name: str, value: object) -> bool:
    """A key or password, or a URL that carries one (`postgresql://user:password@host/db`)."""
    if name in SECRETS:
        return True
    return name in CREDENTIAL_URLS and isinstance(value, str) and urlsplit(value).password is not None


def shared_values(settings: Settings) -> dict[str, Any]:
    """Every setting but the secrets, unset ones included (so the receiver cannot fill them in from
    its own environment and end up with other values than the sender)."""
    return {name: value for name, value in msgspec.to_builtins(settings).items() if not is_secret(name, value)}


def received_settings(shared: dict[str, Any]) -> Settings:
    """The sender's settings with this process's own secrets (its environment over its `.env`): what a
    Settings that crossed a process boundary becomes. A secret this process lacks fails loudly
    (`__post_init__`'s checks) or stays unset, as it would have been had this process read everything."""
    own = _environment(None, ".env")
    withheld = {name: own[name] for name in _ENV_NAMES if name not in shared and name in own}
    missing = [name for name in CREDENTIAL_URLS if name not in shared and name not in own]
    if missing:
        raise ConfigError(
            f"{missing[0]} carries a password, so it never travels with a Ray call: set {missing[0]} in the "
            "environment (or .env) of every node"
        )
    return _convert({**withheld, **shared})


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in msgspec.structs.fields(Settings):
        default = "" if field.default in (None, msgspec.NODEFAULT) else str(field.default)
        rows.append(
            f"| `{field.encode_name}` | {f'`{default}`' if default else '(unset)'} | {DOCS[field.encode_name]} |"
        )
    return "\n".join(rows)
