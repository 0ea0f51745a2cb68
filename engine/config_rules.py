"""The checks between settings that no single field's type can express, run when a Settings is built.

They live apart from the table so it stays readable as a list of variables; a failure names the
variable(s) and the reason, at start-up rather than later in a hot path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from engine.prices_data import SHIPPED_FIRST_DAY, SHIPPED_LAST_DAY

if TYPE_CHECKING:  # for the annotation only: engine.config runs these checks, so it imports this module
    from engine.config import Settings


class ConfigError(ValueError):
    """A configuration variable has a value the system cannot run with."""


def check(s: Settings) -> None:
    """Raises ConfigError for the first combination of values the system cannot run with."""
    if s.plaid_env not in ("sandbox", "production"):
        hint = (
            " (plaid-python has no 'development' environment; use 'sandbox' for testing)"
            if s.plaid_env == "development"
            else ""
        )
        raise ConfigError(f"PLAID_ENV={s.plaid_env!r}: must be 'sandbox' or 'production'{hint}")
    if s.plaid_env == "production" and not s.plaid_webhook_verify:
        # Unsigned webhooks are a local-development convenience; in production anyone could forge one.
        raise ConfigError(
            "CLERA_PLAID_WEBHOOK_VERIFY=false is refused with PLAID_ENV='production':"
            " Plaid webhooks must be signature-checked in production"
        )
    if s.feed == "replay" and not SHIPPED_FIRST_DAY <= s.replay_start <= SHIPPED_LAST_DAY:
        raise ConfigError(
            f"CLERA_REPLAY_START={s.replay_start.isoformat()!r}: the shipped prices cover "
            f"{SHIPPED_FIRST_DAY.isoformat()}..{SHIPPED_LAST_DAY.isoformat()}"
        )
    if s.store == "supabase" and not (s.supabase_url and s.supabase_service_role_key):
        raise ConfigError("CLERA_STORE='supabase' needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
    if s.broker == "alpaca" and not (s.broker_api_key and s.broker_secret_key):
        raise ConfigError("CLERA_BROKER='alpaca' needs BROKER_API_KEY and BROKER_SECRET_KEY")
    if s.feed == "alpaca" and not (s.broker_api_key and s.broker_secret_key):
        raise ConfigError("CLERA_FEED='alpaca' needs BROKER_API_KEY and BROKER_SECRET_KEY")
    if s.ach_daily_limit <= 0 or s.pdt_equity_threshold < 0:
        raise ConfigError("CLERA_ACH_DAILY_LIMIT must be > 0 and CLERA_PDT_EQUITY_THRESHOLD >= 0")
    if s.llm == "openai" and not (s.openai_api_key or s.llm_base_url):
        raise ConfigError(
            "CLERA_LLM='openai' needs OPENAI_API_KEY (OpenAI) or CLERA_LLM_BASE_URL (a compatible server)"
        )
    if not Decimal(0) <= s.risk_free_rate < 1:
        raise ConfigError(f"CLERA_RISK_FREE_RATE={s.risk_free_rate}: an annual rate in [0, 1), e.g. 0.02 for 2%")
    if s.agent_min_replicas > s.agent_max_replicas:
        raise ConfigError("CLERA_AGENT_MIN_REPLICAS must not exceed CLERA_AGENT_MAX_REPLICAS")
    if s.serve_min_replicas > s.serve_max_replicas:
        raise ConfigError("CLERA_SERVE_MIN_REPLICAS must not exceed CLERA_SERVE_MAX_REPLICAS")
    if s.serve_direct_ingress and not (
        s.direct_port + 100 <= 65535 and not s.direct_port <= s.port <= s.direct_port + 100
    ):
        raise ConfigError(
            f"CLERA_DIRECT_PORT={s.direct_port}: the replicas' ports {s.direct_port}..{s.direct_port + 100} "
            f"must be valid and must not include CLERA_PORT={s.port}"
        )
    if s.native_ws:
        overlaps_direct = s.serve_direct_ingress and abs(s.ws_port - s.direct_port) <= 100
        if s.ws_port + 100 > 65535 or s.ws_port <= s.port <= s.ws_port + 100 or overlaps_direct:
            raise ConfigError(
                f"CLERA_WS_PORT={s.ws_port}: the replicas' WebSocket ports {s.ws_port}..{s.ws_port + 100} must be "
                f"valid and must not include CLERA_PORT={s.port} nor overlap CLERA_DIRECT_PORT's "
                f"{s.direct_port}..{s.direct_port + 100}"
            )
