"""`clera chat` as a person uses it: a real process talking to a real gateway, answering its prompts."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from agent_support import agent_world
from gateway_support import ALICE, API_KEY, token

CLERA = str(Path(sys.executable).with_name("clera"))


async def run_chat(url: str, account: str, tmp_path: Path, typed: str) -> str:
    process = await asyncio.create_subprocess_exec(
        CLERA, "chat", account, "--url", url, "--token", token(ALICE), "--api-key", API_KEY,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "CLERA_DATA_DIR": str(tmp_path / "cli"), "COLUMNS": "200"},
    )
    out, _ = await asyncio.wait_for(process.communicate(typed.encode()), timeout=60)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_clera_chat_shows_steps_and_places_only_what_is_confirmed(tmp_path: Path, redis_url: str) -> None:
    async with agent_world(tmp_path, redis_url) as w:
        account = w.accounts[ALICE]
        before = len(w.broker.list_orders(account, "all"))
        out = await run_chat(
            w.gateway.http, account, tmp_path, "buy $100 of Apple\ncancel\nbuy 1 share of IBM\nconfirm\n"
        )
        assert "trade_execution -> buy(symbol='AAPL', notional='100')" in out
        assert "confirmation needed" in out and "Canceled: no order was placed." in out
        assert "Order placed: buy 1 shares of IBM" in out
        chat_orders = [o for o in w.broker.list_orders(account, "all") if o.client_order_id.startswith("clera-")]
        assert len(w.broker.list_orders(account, "all")) == before + 1
        assert [(o.symbol, str(o.qty)) for o in chat_orders] == [("IBM", "1")]

        edited = await run_chat(w.gateway.http, account, tmp_path, "buy $100 of Apple\nedit\nMSFT\n200\nconfirm\n")
        assert "notional='200'" in edited or "$200.00 of MSFT" in edited
        chat_orders = [o for o in w.broker.list_orders(account, "all") if o.client_order_id.startswith("clera-")]
        assert sorted((o.symbol, str(o.notional or o.qty)) for o in chat_orders) == [("IBM", "1"), ("MSFT", "200.00")]


async def test_clera_chat_reports_a_refusal(tmp_path: Path, redis_url: str) -> None:
    async with agent_world(tmp_path, redis_url) as w:
        out = await run_chat(w.gateway.http, w.accounts["user-bob"], tmp_path, "what do I own?\n")
        assert "403 forbidden" in out
