"""Conversations live in the checkpointer, so they outlive the gateway: SQLite by default, PostgreSQL
with DATABASE_URL (the machine's real server). A waiting confirmation survives a restart too."""

from __future__ import annotations

from pathlib import Path

import psycopg
from agent_support import agent_world
from conftest import PG_URL
from gateway_support import ALICE, BOB

from agents.memory import CHECKPOINT_FILE


async def _conversation_survives_a_restart(tmp_path: Path, redis_url: str, **env: str) -> None:
    async with agent_world(tmp_path, redis_url, **env) as w:
        account = w.accounts[ALICE]
        first = await w.ok(await w.chat(ALICE, "how much cash do I have?"))
        thread = first["threadId"]
        turn = await w.ok(await w.chat(ALICE, "buy 2 shares of IBM", thread=thread))
        before = len(w.broker.list_orders(account, "all"))

        await w.restart()

        detail = (await w.http.get(f"/api/chat/threads/{thread}", headers=w.headers(ALICE))).json()
        assert [m["content"] for m in detail["messages"] if m["role"] == "user"] == [
            "how much cash do I have?", "buy 2 shares of IBM",
        ]
        assert detail["interrupt"] == turn["interrupt"]
        assert (await w.http.get(f"/api/chat/threads/{thread}", headers=w.headers(BOB))).status_code == 403
        done = await w.ok(await w.resume(ALICE, thread, turn["interrupt"]["id"], "confirm"))
        assert [s["tool"] for s in done["steps"]] == ["place_order"]
        assert len(w.broker.list_orders(account, "all")) == before + 1
        later = await w.ok(await w.chat(ALICE, "show my recent trades", thread=thread))
        assert later["steps"][0]["tool"] == "account_activity"


async def test_sqlite_checkpoints_keep_a_conversation_across_a_restart(tmp_path: Path, redis_url: str) -> None:
    await _conversation_survives_a_restart(tmp_path, redis_url)
    assert (tmp_path / "data" / CHECKPOINT_FILE).is_file()


async def test_postgres_checkpoints_keep_a_conversation_across_a_restart(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    await _conversation_survives_a_restart(tmp_path, redis_url, DATABASE_URL=pg_url)
    assert not (tmp_path / "data" / CHECKPOINT_FILE).exists()
    schema = pg_url.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_URL) as conn:
        threads = conn.execute(f'SELECT count(*) FROM "{schema}".chat_threads').fetchone()
        checkpoints = conn.execute(f'SELECT count(DISTINCT thread_id) FROM "{schema}".checkpoints').fetchone()
    assert threads == (1,) and checkpoints == (1,)
