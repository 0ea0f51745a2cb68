"""The one settings table: defaults that run, bad values that fail loudly with the variable's name."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from engine.config import ConfigError, Settings, load_settings
from engine.config_docs import DOCS, markdown_table


def test_defaults_are_the_embedded_ones() -> None:
    s = load_settings({}, env_file=None)
    assert (s.feed, s.broker, s.store, s.redis_external_url) == ("replay", "paper", "sql", None)
    assert s.replay_start == dt.date(2012, 6, 1) and s.ach_daily_limit == Decimal("50000")
    assert s.pinned_symbol_list == ["AAPL", "MSFT", "IBM", "GOOG", "FB"]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CLERA_PORTFOLIO_SHARDS": "abc"}, "CLERA_PORTFOLIO_SHARDS='abc': Expected `int`"),
        ({"CLERA_PORTFOLIO_SHARDS": "0"}, "CLERA_PORTFOLIO_SHARDS='0': Expected `int` >= 1"),
        ({"CLERA_FEED": "bloomberg"}, "CLERA_FEED='bloomberg'"),
        ({"CLERA_REPLAY_START": "2012-13-01"}, "CLERA_REPLAY_START='2012-13-01'"),
        (
            {"CLERA_REPLAY_START": "2020-01-02"},
            "CLERA_REPLAY_START='2020-01-02': the shipped prices cover 2000-03-01..2013-03-01",
        ),
        ({"CLERA_REPLAY_START": "1999-12-31"}, "CLERA_REPLAY_START='1999-12-31': the shipped prices cover"),
        ({"CLERA_ACH_DAILY_LIMIT": "lots"}, "CLERA_ACH_DAILY_LIMIT='lots'"),
        ({"CLERA_ACH_DAILY_LIMIT": "-5"}, "CLERA_ACH_DAILY_LIMIT must be > 0"),
        ({"CLERA_PDT_ENABLED": "maybe"}, "CLERA_PDT_ENABLED='maybe'"),
        ({"PLAID_ENV": "development"}, "plaid-python has no 'development' environment"),
        (
            {"PLAID_ENV": "production", "CLERA_PLAID_WEBHOOK_VERIFY": "false"},
            "CLERA_PLAID_WEBHOOK_VERIFY=false is refused with PLAID_ENV='production'",
        ),
        ({"CLERA_BROKER": "alpaca"}, "needs BROKER_API_KEY and BROKER_SECRET_KEY"),
        ({"CLERA_STORE": "supabase"}, "needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"),
        ({"CLERA_SERVE_MIN_REPLICAS": "5", "CLERA_SERVE_MAX_REPLICAS": "2"}, "must not exceed"),
        ({"CLERA_DIRECT_PORT": "7950"}, "must not include CLERA_PORT=8000"),
        ({"CLERA_DIRECT_PORT": "65500"}, "CLERA_DIRECT_PORT=65500"),
        ({"CLERA_WS_PORT": "7950"}, "CLERA_WS_PORT=7950: the replicas' WebSocket ports 7950..8050"),
        ({"CLERA_WS_PORT": "8050"}, "overlap CLERA_DIRECT_PORT's 8001..8101"),
        ({"CLERA_WS_PORT": "65500"}, "CLERA_WS_PORT=65500"),
        ({"CLERA_NATIVE_WS": "sometimes"}, "CLERA_NATIVE_WS='sometimes'"),
        ({"CLERA_PUBLISH_BUDGET": "0"}, "CLERA_PUBLISH_BUDGET='0'"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env, env_file=None)
    assert fragment in str(err.value)


def test_unverified_plaid_webhooks_only_outside_production() -> None:
    """Switching verification off is for local sandboxes; production keeps it on (the default)."""
    assert load_settings({"CLERA_PLAID_WEBHOOK_VERIFY": "false"}, env_file=None).plaid_webhook_verify is False
    assert load_settings({"PLAID_ENV": "production"}, env_file=None).plaid_webhook_verify is True
    with pytest.raises(ConfigError, match="CLERA_PLAID_WEBHOOK_VERIFY"):
        Settings(plaid_env="production", plaid_webhook_verify=False)


def test_environment_wins_over_dotenv_and_empty_means_unset(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CLERA_SYMBOL_SHARDS=3\nCLERA_PORTFOLIO_SHARDS=5\nREDIS_URL=redis://example:1/0\n")
    s = load_settings({"CLERA_PORTFOLIO_SHARDS": "7", "REDIS_URL": ""}, env_file=env_file)
    assert (s.symbol_shards, s.portfolio_shards) == (3, 7)
    assert s.redis_url == "redis://example:1/0"  # an empty variable does not erase the file's value


def test_pinned_symbols_override() -> None:
    assert load_settings({"CLERA_PINNED_SYMBOLS": " aapl, ,ibm"}, env_file=None).pinned_symbol_list == ["AAPL", "IBM"]
    assert load_settings({"CLERA_FEED": "simulated"}, env_file=None).pinned_symbol_list == []


def test_every_variable_is_documented_in_the_readme() -> None:
    names = {f.encode_name for f in msgspec.structs.fields(Settings)}
    assert names == set(DOCS)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert markdown_table() in readme, "README's table is stale: run scripts/readme-config.sh"


SENDER = {
    "BACKEND_API_KEY": "sender-api-key", "PLAID_CLIENT_ID": "client-1", "PLAID_SECRET": "sender-plaid-secret",
    "DATABASE_URL": "postgresql://clera:sender-pw@db.internal:5432/clera", "REDIS_URL": "redis://10.0.0.5:6379/0",
    "CLERA_PORT": "9000",
}
RECEIVE = (
    "import json, pickle, sys\n"
    "from engine.config import ConfigError\n"
    "try:\n"
    "    s = pickle.loads(sys.stdin.buffer.read())\n"
    "except ConfigError as exc:\n"
    "    print(json.dumps({'error': str(exc)}))\n"
    "else:\n"
    "    print(json.dumps({k: getattr(s, k) for k in ('backend_api_key', 'plaid_client_id', 'plaid_secret',"
    " 'database_url', 'redis_url', 'port', 'smtp_host')}))\n"
)


def _received_in_another_process(payload: bytes, env: dict[str, str], cwd: Path) -> dict[str, object]:
    root = Path(__file__).resolve().parent.parent
    environ = {k: v for k, v in os.environ.items() if k not in _SETTING_NAMES} | {"PYTHONPATH": str(root), **env}
    out = subprocess.run([sys.executable, "-c", RECEIVE], input=payload, env=environ, cwd=cwd,
                         capture_output=True, check=True, timeout=120)
    return json.loads(out.stdout)


_SETTING_NAMES = {field.encode_name for field in msgspec.structs.fields(Settings)}


def test_settings_cross_processes_without_their_secrets(tmp_path: Path) -> None:
    """What Ray does to a task's or an actor's Settings argument (pickling): the bytes carry no secret,
    and the receiving process puts in its own, from its environment over its .env; every other value,
    unset ones included, is the sender's."""
    payload = pickle.dumps(load_settings(SENDER, env_file=None))
    for secret in ("sender-api-key", "sender-plaid-secret", "sender-pw"):
        assert secret.encode() not in payload
    (tmp_path / ".env").write_text("PLAID_SECRET=node-plaid-secret\nCLERA_SMTP_HOST=smtp.node\n")
    node = {"BACKEND_API_KEY": "node-api-key", "CLERA_PORT": "1234", "PLAID_CLIENT_ID": "node-client",
            "DATABASE_URL": "postgresql://clera:node-pw@db.internal:5432/clera"}
    received = _received_in_another_process(payload, node, tmp_path)
    assert received == {
        "backend_api_key": "node-api-key", "plaid_secret": "node-plaid-secret",  # secrets: the node's own
        "database_url": node["DATABASE_URL"],  # a URL with a password is one
        "plaid_client_id": "client-1", "redis_url": SENDER["REDIS_URL"], "port": 9000,  # the rest: the sender's
        "smtp_host": None,  # unset by the sender stays unset, whatever the node has
    }
    refused = _received_in_another_process(payload, {}, tmp_path)
    assert "DATABASE_URL carries a password" in str(refused["error"])
