"""The real routes on an existing Clera database (CLERA_SCHEMA=clera on PostgreSQL): a person's account is
`user_onboarding.alpaca_account_id` for their user id, 403 for everyone else, and a closure is recorded
in the frontend's own columns. The frontend's tables are created by the test as its database has them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import free_port
from gateway_support import Gateway, make_settings
from paper_support import MON_MORNING, make_broker, open_account, sqlite_url
from psycopg.rows import dict_row
from test_brokerage_routes import World, assert_error
from test_closure_routes import CONFIRMED, holding, next_morning
from test_store_contract import CLERA_FRONTEND_DDL, user

from brokerage.closure.process import ClosureProcess
from brokerage.closure.records import ClosureStore
from brokerage.email import OutboxMailer
from brokerage.sql import Database
from brokerage.store_factory import store_from_settings
from engine.clock import ManualClock
from engine.config import ConfigError
from gateway import routes_brokerage, routes_closure, routes_core
from gateway.services import Services

EXISTING, ALICE, BOB = user("existing-person"), user("alice"), user("bob")


def frontend_columns(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'user_onboarding'"
    ).fetchall()
    return {r["column_name"] for r in rows}


def onboarding(conn: psycopg.Connection[Any], account_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT user_id::text AS user_id, status::text AS status, closure_initiated_at, closure_completed_at,"
        " closure_confirmation_code FROM user_onboarding WHERE alpaca_account_id = %s", (account_id,)
    ).fetchone()
    assert row is not None
    return row


@contextlib.asynccontextmanager
async def clera_world(tmp_path: Path, redis_url: str, pg_url: str) -> AsyncIterator[World]:
    settings = make_settings(redis_url, tmp_path, DATABASE_URL=pg_url, CLERA_SCHEMA="auto")  # detected
    store = store_from_settings(settings)
    records = ClosureStore(Database(pg_url))
    records.migrate()
    clock = ManualClock(MON_MORNING)
    broker = make_broker(sqlite_url(tmp_path), clock, redis_url)
    process = ClosureProcess(broker, records, store, clock, OutboxMailer(tmp_path / "outbox"), settings)
    services = Services.in_process(settings, redis_url, store, broker, closure=process)
    gateway = Gateway(services, free_port(), [routes_core.routes, routes_brokerage.routes, routes_closure.routes])
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.http, timeout=30) as http:
            yield World(gateway, http, clock, broker, store, redis_url)
    finally:
        await gateway.stop()


async def test_existing_people_own_their_accounts_and_closures_land_in_user_onboarding(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(CLERA_FRONTEND_DDL)
        before = frontend_columns(conn)
        # a person who onboarded through today's Clera: their Alpaca account is on their onboarding row
        clock = ManualClock(MON_MORNING)
        existing_account, _ = open_account(make_broker(sqlite_url(tmp_path), clock, redis_url), "old@example.com")
        conn.execute(
            "INSERT INTO user_onboarding (user_id, status, alpaca_account_id, alpaca_account_number)"
            " VALUES (%s, 'approved', %s, '123456789')", (EXISTING, existing_account),
        )
        # alice is half-way through the frontend's onboarding: a row without an account yet
        conn.execute("INSERT INTO user_onboarding (user_id, status) VALUES (%s, 'in_progress')", (ALICE,))

        async with clera_world(tmp_path, redis_url, pg_url) as w:
            assert frontend_columns(conn) - before == {
                "closure_initiated_at", "closure_completed_at", "closure_confirmation_code"
            }
            enum = conn.execute("SELECT unnest(enum_range(NULL::onboarding_status))::text AS v").fetchall()
            assert [r["v"] for r in enum] == [
                "not_started", "in_progress", "submitted", "approved", "pending_closure", "closed"
            ]

            # the existing account answers its owner at once, and 403 to anyone else (whatever their id)
            account = await w.ok("GET", f"/api/account/{existing_account}", EXISTING)
            assert account["id"] == existing_account
            for stranger in (BOB, "user-not-a-uuid"):
                assert_error(await w.call("GET", f"/api/account/{existing_account}", stranger), 403, "forbidden")
                assert_error(await w.call("GET", f"/account-closure/check-readiness/{existing_account}", stranger),
                             403, "forbidden")
            assert_error(await w.call("GET", "/api/account/no-such-account", EXISTING), 403, "forbidden")

            # alice opens her account through the route: it lands on her onboarding row, not a new one
            account_id, rel_id = await holding(w, "100", None, ALICE, "alice@example.com")
            def alice_rows() -> list[dict[str, Any]]:
                return conn.execute("SELECT alpaca_account_id, status::text AS status FROM user_onboarding"
                                    " WHERE user_id = %s", (ALICE,)).fetchall()

            assert alice_rows() == [{"alpaca_account_id": account_id, "status": "submitted"}]
            assert (await w.ok("GET", f"/api/account/{account_id}", ALICE))["status"] == "ACTIVE"
            # the broker's ACTIVE, synced by the read, in the enum's word for an open account
            assert alice_rows() == [{"alpaca_account_id": account_id, "status": "approved"}]
            assert_error(await w.call("GET", f"/api/account/{account_id}", EXISTING), 403, "forbidden")

            # her closure, recorded in the frontend's columns with the seed's words
            started = await w.ok("POST", f"/api/account-closure/initiate/{account_id}", ALICE,
                                 {"ach_relationship_id": rel_id, **CONFIRMED})
            pending = onboarding(conn, account_id)
            assert pending["status"] == "pending_closure" and pending["closure_initiated_at"] is not None
            assert pending["closure_confirmation_code"] == started["confirmation_code"]
            assert pending["closure_completed_at"] is None
            await w.ok("POST", f"/account-closure/withdraw-funds/{account_id}", ALICE, {})
            next_morning(w.clock)
            await w.ok("POST", f"/api/account-closure/close-account/{account_id}", ALICE, {})
            closed = onboarding(conn, account_id)
            assert (closed["status"], closed["user_id"]) == ("closed", ALICE)
            assert closed["closure_completed_at"] is not None
            assert closed["closure_confirmation_code"] == started["confirmation_code"]
            status = await w.ok("GET", f"/account-closure/status/{account_id}", ALICE)
            assert status["step"] == "completed", status
            assert_error(await w.call("GET", f"/account-closure/status/{account_id}", BOB), 403, "forbidden")
        # nothing of the existing person's row was touched
        assert onboarding(conn, existing_account) == {
            "user_id": EXISTING, "status": "approved", "closure_initiated_at": None, "closure_completed_at": None,
            "closure_confirmation_code": None,
        }


def test_the_layout_is_chosen_by_clera_schema(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    own = store_from_settings(make_settings(redis_url, tmp_path, DATABASE_URL=pg_url))  # auto, no user_onboarding
    assert own.layout == "own"
    with pytest.raises(ConfigError, match="user_onboarding"):
        store_from_settings(make_settings(redis_url, tmp_path, DATABASE_URL=pg_url, CLERA_SCHEMA="clera"))
    with pytest.raises(ConfigError, match="PostgreSQL"):
        store_from_settings(make_settings(redis_url, tmp_path / "lite", CLERA_SCHEMA="clera"))
    with pytest.raises(ConfigError, match="CLERA_SCHEMA"):
        make_settings(redis_url, tmp_path, CLERA_SCHEMA="frontend")
