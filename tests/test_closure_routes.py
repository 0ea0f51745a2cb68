"""The account closure routes through a real uvicorn server: a real PaperBroker on a SQLite file moved
by a ManualClock, real Redis prices, a real SQLite store and closure records, emails in an outbox
folder, the in-process ClosureRunner.

Accounts are opened, funded and traded through the brokerage routes, then closed through the
closure routes under both prefixes; every refusal is checked to have left the ledger and the
records alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest
from conftest import free_port
from gateway_support import Gateway, make_settings
from paper_support import MON_MORNING, make_broker, set_price, sqlite_url
from test_brokerage_routes import World, assert_error

from brokerage.closure.process import ClosureProcess
from brokerage.closure.records import (
    STEP_NUMBER,
    TOTAL_STEPS,
    ClosureRecord,
    ClosureStore,
    HistoryEntry,
)
from brokerage.email import OutboxMailer
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine import calendar
from engine.clock import ManualClock
from gateway import routes_brokerage, routes_closure
from gateway.routes_closure import (
    InitiateResponse,
    MessageResponse,
    ProgressResponse,
    ReadinessResponse,
    SettlementResponse,
    StatusResponse,
    StepResponse,
    TransferStatusResponse,
    WithdrawResponse,
)
from gateway.services import Services

ALICE, BOB = "user-alice", "user-bob"
PREFIXES = ("/account-closure", "/api/account-closure")
CONFIRMED = {"confirm_liquidation": True, "confirm_irreversible": True}
UTC = dt.UTC


@contextlib.asynccontextmanager
async def closure_world(tmp_path: Path, redis_url: str, **env: str) -> AsyncIterator[World]:
    settings = make_settings(redis_url, tmp_path, **env)
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    store = SqlStore(db)
    store.migrate()
    records = ClosureStore(db)
    records.migrate()
    clock = ManualClock(MON_MORNING)
    broker = make_broker(sqlite_url(tmp_path), clock, redis_url, **env)
    process = ClosureProcess(broker, records, store, clock, OutboxMailer(tmp_path / "outbox"), settings)
    services = Services.in_process(settings, redis_url, store, broker, closure=process)
    gateway = Gateway(services, free_port(), [routes_brokerage.routes, routes_closure.routes])
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.http, timeout=30) as http:
            w = World(gateway, http, clock, broker, store, redis_url)
            w.records = records
            w.outbox = tmp_path / "outbox"
            yield w
    finally:
        await gateway.stop()


T = TypeVar("T")


def shaped(answer: Any, documented: type[T]) -> T:
    """The answer has exactly the documented shape (/openapi.json): every field, nothing more, right types."""
    fields = {f.encode_name for f in msgspec.structs.fields(documented)}
    assert set(answer) == fields, (sorted(answer), sorted(fields))
    return msgspec.convert(answer, documented, strict=False)


def next_morning(clock: ManualClock) -> None:
    """10:00 New York on the next trading day."""
    day = calendar.next_trading_day(clock.now().astimezone(UTC).date())
    clock.set(dt.datetime.combine(day, dt.time(15, 0), UTC))


async def holding(
    w: World, amount: str, buy: str | None, user: str = ALICE, email: str = "ada@example.com"
) -> tuple[str, str]:
    """A funded account (Tuesday morning) that bought `buy` dollars of AAPL at $100."""
    account_id, rel_id = await w.funded(amount, user, email)
    if buy is not None:
        set_price(w.redis_url, "AAPL", 100.0)
        order = await w.ok("POST", "/api/trade", user, {"accountId": account_id, "ticker": "AAPL", "side": "BUY",
                                                        "notional_amount": buy})
        assert order["status"] == "filled", order
    return account_id, rel_id


async def closure_state(w: World, account_id: str, user: str = ALICE) -> dict[str, Any]:
    """The ledger plus what the closure side keeps: a refused request leaves all of it as it was."""
    return {
        **await w.ledger(account_id, user),
        "record": w.records.get(account_id),
        "store_status": w.store.get_account(account_id).status,
    }


def sells(w: World, account_id: str) -> list[Any]:
    return [o for o in w.broker.list_orders(account_id, "all") if o.side == "sell"]


def outgoing(w: World, account_id: str) -> list[Any]:
    return [t for t in w.broker.list_transfers(account_id) if t.direction == "OUTGOING"]


async def test_readiness_and_refused_initiations_change_nothing(tmp_path: Path, redis_url: str) -> None:
    async with closure_world(tmp_path, redis_url) as w:
        account_id, rel_id = await holding(w, "5000", "1000")
        bob_account, _ = await holding(w, "100", None, BOB, "bob@example.com")
        for prefix in PREFIXES:
            ready = await w.ok("GET", f"{prefix}/check-readiness/{account_id}")
            assert shaped(ready, ReadinessResponse).ready is True, ready
            assert ready["details"]["cash"] == "4000.00" and ready["details"]["positions"] == 1, ready
        before = await closure_state(w, account_id)

        # someone else's account (and no credentials at all)
        for prefix in PREFIXES:
            assert_error(await w.call("GET", f"{prefix}/check-readiness/{account_id}", BOB), 403, "forbidden")
            assert_error(await w.call("POST", f"{prefix}/initiate/{account_id}", BOB,
                                      {"ach_relationship_id": rel_id, **CONFIRMED}), 403, "forbidden")
            assert_error(await w.call("GET", f"{prefix}/progress/{account_id}", BOB), 403, "forbidden")
            assert_error(await w.call("POST", f"{prefix}/cancel/{account_id}", BOB, {}), 403, "forbidden")
            assert_error(await w.call("GET", f"{prefix}/check-readiness/{account_id}", None), 401)
            assert_error(await w.call("GET", f"{prefix}/check-readiness/{account_id}", api_key=None), 401)
        assert_error(await w.call("GET", f"/account-closure/check-readiness/{bob_account}"), 403, "forbidden")

        # the confirmations: missing, false, not a boolean
        path = f"/api/account-closure/initiate/{account_id}"
        assert_error(await w.call("POST", path, body={"ach_relationship_id": rel_id}), 422, "invalid_request")
        for field in ("confirm_liquidation", "confirm_irreversible"):
            error = assert_error(await w.call("POST", path, body={"ach_relationship_id": rel_id, **CONFIRMED,
                                                                  field: False}), 422, "confirmation_required")
            assert error["details"] == {"field": field}
            assert_error(await w.call("POST", path, body={"ach_relationship_id": rel_id, **CONFIRMED, field: "yes"}),
                         422, "invalid_request")
        assert_error(await w.call("POST", path, body={**CONFIRMED}), 422, "invalid_request")
        assert_error(await w.call("POST", path, raw=b"{not json"), 400, "bad_request")

        # a relationship that is not this account's
        error = assert_error(await w.call("POST", path, body={"ach_relationship_id": "no-such-relationship",
                                                             **CONFIRMED}), 404, "ach_not_found")
        assert "no-such-relationship" in error["message"]

        # no closure yet: the routes that need one say so
        for prefix in PREFIXES:
            assert_error(await w.call("GET", f"{prefix}/progress/{account_id}"), 404, "closure_not_found")
            assert_error(await w.call("POST", f"{prefix}/resume/{account_id}", body={}), 404, "closure_not_found")
            assert_error(await w.call("GET", f"{prefix}/status/{account_id}"), 404, "closure_not_found")
        assert await closure_state(w, account_id) == before
        assert sells(w, account_id) == [] and w.store.get_account(account_id).status == "active"


async def test_the_whole_closure_day_by_day(tmp_path: Path, redis_url: str) -> None:
    """$120,000 (some of it in AAPL): sold at once, T+1 waited, withdrawn in three daily chunks of at
    most $50,000, closed. Step by step through the routes, then `resume` each morning."""
    async with closure_world(tmp_path, redis_url) as w:
        account_id, rel_id = await holding(w, "120000", "20000")
        assert w.broker.get_account(account_id).cash == Decimal("100000.00")

        started = await w.ok("POST", f"/account-closure/initiate/{account_id}", body={"ach_relationship_id": rel_id,
                                                                                      **CONFIRMED})
        shaped(started, InitiateResponse)
        assert started["success"] is True and started["confirmation_code"].startswith("CLA-"), started
        assert [o.status for o in sells(w, account_id)] == ["filled"]  # market open: sold at once
        cash = w.broker.get_account(account_id).cash
        assert cash == Decimal("120000.00")
        assert w.store.get_account(account_id).status == "pending_closure"
        assert len(list(w.outbox.glob("*.eml"))) == 1

        # the same closure, the same answers, under both prefixes
        first, second = [await w.ok("GET", f"{p}/progress/{account_id}") for p in PREFIXES]
        assert first == second
        shaped(first, ProgressResponse)
        assert first["total_steps"] == TOTAL_STEPS == 5
        assert first["step_number"] == STEP_NUMBER[first["step"]] and first["step_number"] in (1, 2), first
        assert first["confirmation_code"] == started["confirmation_code"] and first["initiated_at"]
        assert first["history"], first

        # before T+1: nothing to withdraw yet
        settlement = await w.ok("GET", f"/api/account-closure/settlement-status/{account_id}")
        assert shaped(settlement, SettlementResponse).settled is False
        assert settlement["details"]["unsettled"] == "20000.00", settlement
        assert_error(await w.call("POST", f"/account-closure/close-account/{account_id}", body={}), 422)
        assert w.broker.get_account(account_id).status == "ACTIVE"

        # Wednesday: settled; the first chunk goes out through the route
        next_morning(w.clock)
        assert (await w.ok("GET", f"/account-closure/settlement-status/{account_id}"))["settled"] is True
        sent = await w.ok("POST", f"/api/account-closure/withdraw-funds/{account_id}", body={})
        shaped(sent, WithdrawResponse)
        assert sent["success"] is True and sent["amount"] == "50000.00", sent
        assert isinstance(sent["amount"], str)
        transfer = await w.ok("GET", f"/account-closure/withdrawal-status/{account_id}/{sent['transfer_id']}")
        shaped(transfer, TransferStatusResponse)
        assert (transfer["transfer_id"], transfer["amount"]) == (sent["transfer_id"], "50000.00"), transfer
        assert transfer["status"] in ("QUEUED", "SENT_TO_CLEARING"), transfer
        assert_error(await w.call("GET", f"/account-closure/withdrawal-status/{account_id}/no-such-transfer"), 404)
        # a second click the same day answers the withdrawal in flight and sends nothing more
        again = await w.ok("POST", f"/account-closure/withdraw-funds/{account_id}", body={})
        assert again["transfer_id"] == sent["transfer_id"] and len(outgoing(w, account_id)) == 1, again

        # then every morning: resume, until the closure completes
        numbers = [first["step_number"]]
        for _ in range(12):
            progress = await w.ok("GET", f"/account-closure/progress/{account_id}")
            if progress["step"] == "completed":
                break
            next_morning(w.clock)
            resumed = await w.ok("POST", f"/api/account-closure/resume/{account_id}", body={})
            assert shaped(resumed, StepResponse).success is True, resumed
            progress = shaped(await w.ok("GET", f"/api/account-closure/progress/{account_id}"), ProgressResponse)
            progress = msgspec.to_builtins(progress)
            assert progress["step_number"] == STEP_NUMBER[progress["step"]]
            numbers.append(progress["step_number"])
        assert progress["step"] == "completed", progress
        assert numbers == sorted(numbers) and numbers[-1] == 5, numbers

        withdrawals = outgoing(w, account_id)
        assert sorted(t.amount for t in withdrawals) == [Decimal("20000.00"), Decimal("50000.00"), Decimal("50000.00")]
        assert sum(t.amount for t in withdrawals) == cash
        assert {t.status for t in withdrawals} == {"COMPLETE"}
        assert len({t.created_at.date() for t in withdrawals}) == 3  # three banking days
        assert len(sells(w, account_id)) == 1
        assert w.broker.get_account(account_id).status == "ACCOUNT_CLOSED"
        assert w.store.get_account(account_id).status == "closed"
        status = await w.ok("GET", f"/account-closure/status/{account_id}")
        shaped(status, StatusResponse)
        assert (status["step"], status["account_status"], status["withdrawn"]) == ("completed", "closed", "120000.00")
        assert sorted(t["amount"] for t in status["transfers"]) == ["20000.00", "50000.00", "50000.00"]
        assert len(list(w.outbox.glob("*.eml"))) == 2
        # a finished closure stays finished: resume again changes nothing
        await w.call("POST", f"/account-closure/resume/{account_id}", body={})
        assert len(outgoing(w, account_id)) == 3 and len(sells(w, account_id)) == 1


async def test_close_with_money_left_is_refused(tmp_path: Path, redis_url: str) -> None:
    async with closure_world(tmp_path, redis_url) as w:
        account_id, rel_id = await holding(w, "100", None)
        await w.ok("POST", f"/api/account-closure/initiate/{account_id}", body={"ach_relationship_id": rel_id,
                                                                                **CONFIRMED})
        before = await closure_state(w, account_id)
        for prefix in PREFIXES:
            error = assert_error(await w.call("POST", f"{prefix}/close-account/{account_id}", body={}), 422)
            assert "$100.00 remaining" in error["message"], error

        assert await closure_state(w, account_id) == before
        assert w.broker.get_account(account_id).status == "ACTIVE"

        # the $100 goes to the bank (settled cash: no sale to wait for), and once it has arrived the
        # account closes through the route
        sent = await w.ok("POST", f"/account-closure/withdraw-funds/{account_id}", body={})
        assert sent["amount"] == "100.00", sent
        assert_error(await w.call("POST", f"/account-closure/close-account/{account_id}", body={}), 422)
        next_morning(w.clock)
        closed = await w.ok("POST", f"/api/account-closure/close-account/{account_id}", body={})
        assert shaped(closed, MessageResponse).success is True, closed
        assert w.broker.get_account(account_id).status == "ACCOUNT_CLOSED"
        assert w.store.get_account(account_id).status == "closed"
        progress = await w.ok("GET", f"/account-closure/progress/{account_id}")
        assert (progress["step"], progress["step_number"]) == ("completed", 5)
        # closing twice is still one closure
        assert (await w.ok("POST", f"/account-closure/close-account/{account_id}", body={}))["success"] is True


async def test_a_closure_closed_through_the_route_reports_what_it_withdrew(tmp_path: Path, redis_url: str) -> None:
    """close-account after the withdrawal arrived: progress and status count the $100 as withdrawn and
    the record's transfer as COMPLETE (the route's close must bring the record up to the broker first)."""
    async with closure_world(tmp_path, redis_url) as w:
        account_id, rel_id = await holding(w, "100", None)
        await w.ok("POST", f"/account-closure/initiate/{account_id}", body={"ach_relationship_id": rel_id,
                                                                            **CONFIRMED})
        sent = await w.ok("POST", f"/account-closure/withdraw-funds/{account_id}", body={})
        next_morning(w.clock)
        await w.ok("POST", f"/account-closure/close-account/{account_id}", body={})
        assert w.broker.get_transfer(account_id, sent["transfer_id"]).status == "COMPLETE"
        status = await w.ok("GET", f"/account-closure/status/{account_id}")
        assert [(t["id"], t["status"]) for t in status["transfers"]] == [(sent["transfer_id"], "COMPLETE")], status
        assert status["withdrawn"] == "100.00", status
        assert (await w.ok("GET", f"/account-closure/progress/{account_id}"))["withdrawn"] == "100.00"


async def test_cancel_before_and_after_the_liquidation(tmp_path: Path, redis_url: str) -> None:
    async with closure_world(tmp_path, redis_url) as w:
        # A closure whose run died after saving its intent to liquidate and before the broker heard
        # of it: exactly what the process persisted at that moment (nothing was sold).
        cash_only, cash_rel = await holding(w, "300", None)
        now = w.clock.now()
        w.records.save(ClosureRecord(
            account_id=cash_only, user_id=ALICE, ach_relationship_id=cash_rel, confirmation_code="CLA-TEST0001",
            step="canceling_orders", initiated_at=now, updated_at=now, liquidation_requested_at=now,
            history=[HistoryEntry(step="initiated", at=now, message="closure initiated")],
        ))
        w.store.set_account_status(cash_only, "pending_closure", confirmation_code="CLA-TEST0001")
        canceled = await w.ok("POST", f"/api/account-closure/cancel/{cash_only}", body={})
        assert shaped(canceled, MessageResponse).success is True and canceled["message"], canceled
        assert w.store.get_account(cash_only).status == "active"
        assert (await w.ok("GET", f"/account-closure/progress/{cash_only}"))["step"] == "failed"
        assert outgoing(w, cash_only) == [] and w.broker.get_account(cash_only).cash == Decimal("300.00")
        assert w.broker.get_account(cash_only).status == "ACTIVE"
        # a canceled closure is over: the account can be closed again later
        assert (await w.ok("GET", f"/account-closure/check-readiness/{cash_only}"))["ready"] is True

        # sold already: too late to cancel
        held, held_rel = await holding(w, "2000", "500", BOB, "bob@example.com")
        await w.ok("POST", f"/account-closure/initiate/{held}", BOB, {"ach_relationship_id": held_rel, **CONFIRMED})
        before = await closure_state(w, held, BOB)
        for prefix in PREFIXES:
            assert_error(await w.call("POST", f"{prefix}/cancel/{held}", BOB, {}), 409)
        assert await closure_state(w, held, BOB) == before
        # a second initiation of a running closure is refused too
        assert_error(await w.call("POST", f"/account-closure/initiate/{held}", BOB,
                                  {"ach_relationship_id": held_rel, **CONFIRMED}), 409)
        assert len(sells(w, held)) == 1 and w.store.get_account(held).status == "pending_closure"


async def test_every_closure_route_is_documented_under_both_prefixes(tmp_path: Path, redis_url: str) -> None:
    async with closure_world(tmp_path, redis_url) as w:
        doc = (await w.http.get("/openapi.json")).json()
        expected = {
            ("get", "check-readiness/{account_id}"), ("post", "initiate/{account_id}"),
            ("get", "settlement-status/{account_id}"), ("post", "withdraw-funds/{account_id}"),
            ("get", "withdrawal-status/{account_id}/{transfer_id}"), ("post", "close-account/{account_id}"),
            ("get", "progress/{account_id}"), ("post", "resume/{account_id}"), ("post", "cancel/{account_id}"),
            ("get", "status/{account_id}"),
        }
        for prefix in PREFIXES:
            for method, path in expected:
                op = doc["paths"][f"{prefix}/{path}"][method]
                assert op["security"] == [{"ApiKey": [], "BearerJWT": []}], (prefix, path)
                assert {"401", "403", "404"} <= set(op["responses"]), (prefix, path)
        initiate = doc["paths"]["/account-closure/initiate/{account_id}"]["post"]
        body = initiate["requestBody"]["content"]["application/json"]["schema"]
        schema = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        assert set(schema["required"]) == {"ach_relationship_id", "confirm_liquidation", "confirm_irreversible"}


async def test_without_a_closure_runner_the_routes_answer_503(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(redis_url, tmp_path)
    store = SqlStore(Database(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.ensure_user(ALICE)
    store.add_account(ALICE, "acct-1", status="active")
    gateway = Gateway(Services.in_process(settings, redis_url, store), free_port(), [routes_closure.routes])
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.http, timeout=30) as http:
            w = World(gateway, http, ManualClock(MON_MORNING), None, store, redis_url)
            assert_error(await w.call("GET", "/account-closure/progress/acct-1"), 503, "unavailable")
    finally:
        await gateway.stop()


@pytest.mark.parametrize("body", [b"[]", b"\"x\""])
async def test_post_bodies_must_be_objects(tmp_path: Path, redis_url: str, body: bytes) -> None:
    async with closure_world(tmp_path, redis_url) as w:
        account_id, _ = await holding(w, "100", None)
        assert_error(await w.call("POST", f"/account-closure/resume/{account_id}", raw=body), 422, "invalid_request")
