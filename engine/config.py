"""One settings table for the whole system, read from the environment and `.env`.

Every variable has a default that works on a fresh machine (the embedded defaults of docs/architecture.md).
A bad value fails at start-up with the variable's name and the reason, never later in a hot path.
What each variable means is in `engine.config_docs` (the README's table is generated from it,
`clera config --markdown`), the checks between variables in `engine.config_rules`, and which
variables are secrets in `engine.config_secrets`.
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

import msgspec
from dotenv import dotenv_values

from engine.config_rules import ConfigError, check
from engine.config_secrets import CREDENTIAL_URLS, is_secret

__all__ = ["AtLeastOne", "ConfigError", "Positive", "Settings", "get_settings", "load_settings", "received_settings",
           "shared_values"]  # ConfigError lives in engine.config_rules; every importer takes it from here

Positive = msgspec.Meta(gt=0)
AtLeastOne = msgspec.Meta(ge=1)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Field name -> environment variable via `msgspec.field(name=...)`; meanings in `engine.config_docs`."""

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
    native_ws: bool = msgspec.field(default=True, name="CLERA_NATIVE_WS")
    ws_port: Annotated[int, Positive] = msgspec.field(default=8200, name="CLERA_WS_PORT")
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
        check(self)

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


_ENV_NAMES: tuple[str, ...] = tuple(f.encode_name for f in msgspec.structs.fields(Settings))
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
