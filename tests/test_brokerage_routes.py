"""The brokerage routes through a real uvicorn server: a real PaperBroker on a SQLite file, real Redis
prices, a real SQLite store, Plaid through plaid-python against its local stand-in.

Every bad input is answered with the documented error and the ledger is read back afterwards
(through the same routes) to show that nothing moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis
from conftest import free_port
from gateway_support import API_KEY, Gateway, bearer, make_settings
from paper_support import MON_MORNING, TUE_MORNING, application, make_broker, set_price, sqlite_url
from standins.plaid_api import PlaidStandin
from test_plaid import sandbox_public_token

from brokerage.paper import PaperBroker
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine.clock import ManualClock
from gateway import routes_brokerage
from gateway.app import build_app
from gateway.services import Services

ALICE, BOB = "user-alice", "user-bob"
PLAID_ID, PLAID_SECRET = "clera-routes-client", "clera-routes-secret"
PROVIDERS = [routes_brokerage.routes]
BANK = {"bankAccountType": "CHECKING", "bankAccountNumber": "000123456789", "bankRoutingNumber": "121000358",
        "nickname": "Main checking"}
ITEM_LOGIN = json.dumps(
    {"webhook_type": "ITEM", "webhook_code": "ERROR", "item_id": "item-9", "environment": "sandbox",
     "error": {"error_type": "ITEM_ERROR", "error_code": "ITEM_LOGIN_REQUIRED", "error_message": "login changed"}}
).encode()


@dataclass
class World:
    gateway: Gateway
    http: httpx.AsyncClient
    clock: ManualClock
    broker: PaperBroker
    store: SqlStore
    redis_url: str

    async def call(
        self, method: str, path: str, user: str | None = ALICE, body: Any = None, *, raw: bytes | None = None,
        api_key: str | None = API_KEY, params: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = {} if user is None else bearer(user)
        if api_key is not None:
            headers["X-API-Key"] = api_key
        content = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if content is not None:
            headers["Content-Type"] = "application/json"
        return await self.http.request(method, path, headers=headers, content=content, params=params)

    async def ok(self, method: str, path: str, user: str | None = ALICE, body: Any = None, **kw: Any) -> Any:
        response = await self.call(method, path, user, body, **kw)
        assert response.status_code == 200, response.text
        return response.json()

    async def ledger(self, account_id: str, user: str = ALICE) -> dict[str, Any]:
        """Everything a bad request must leave alone, read back through the routes."""
        account = await self.ok("GET", f"/api/account/{account_id}", user)
        return {
            "balances": {k: account[k] for k in ("cash", "cash_withdrawable", "buying_power", "equity", "status")},
            "transfers": (await self.ok("GET", f"/api/account/{account_id}/transfers", user))["transfers"],
            "orders": (await self.ok("GET", f"/api/portfolio/{account_id}/orders", user))["orders"],
            "activities": (await self.ok("GET", f"/api/portfolio/{account_id}/activities", user))["activities"],
            "banks": (await self.ok("GET", "/get-ach-relationships", user, params={"accountId": account_id}))[
                "relationships"
            ],
            "positions": [(p.symbol, p.qty) for p in self.broker.list_positions(account_id)],
        }

    async def open_account(self, user: str = ALICE, email: str = "ada@example.com") -> str:
        app = msgspec.to_builtins(application(email))
        return (await self.ok("POST", "/create-alpaca-account", user, {"userId": user, "alpacaData": app}))["id"]

    async def link_bank(self, account_id: str, user: str = ALICE) -> str:
        return (await self.ok("POST", "/create-ach-relationship-manual", user, {"accountId": account_id, **BANK}))["id"]

    async def funded(self, amount: str, user: str = ALICE, email: str = "ada@example.com") -> tuple[str, str]:
        """Opened and linked on Monday, `amount` deposited; the clock left on Tuesday with the deposit complete."""
        self.clock.set(MON_MORNING)
        account_id = await self.open_account(user, email)
        rel_id = await self.link_bank(account_id, user)
        await self.ok("POST", "/initiate-ach-transfer", user,
                      {"accountId": account_id, "relationshipId": rel_id, "amount": amount, "direction": "INCOMING"})
        self.clock.set(TUE_MORNING)
        return account_id, rel_id


@contextlib.asynccontextmanager
async def world(tmp_path: Path, redis_url: str, *, with_broker: bool = True, **env: str) -> AsyncIterator[World]:
    settings = make_settings(redis_url, tmp_path, **env)
    store = SqlStore(Database(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    clock = ManualClock(MON_MORNING)
    broker = make_broker(sqlite_url(tmp_path), clock, redis_url)
    services = Services.in_process(settings, redis_url, store, broker if with_broker else None)
    gateway = Gateway(services, free_port(), PROVIDERS)
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.http, timeout=30) as http:
            yield World(gateway, http, clock, broker, store, redis_url)
    finally:
        await gateway.stop()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="module")
def plaid_standin() -> Iterator[PlaidStandin]:
    with PlaidStandin(PLAID_ID, PLAID_SECRET) as server:
        yield server


def plaid_env(standin: PlaidStandin) -> dict[str, str]:
    return {"PLAID_CLIENT_ID": PLAID_ID, "PLAID_SECRET": PLAID_SECRET, "CLERA_PLAID_HOST": standin.url,
            "BACKEND_PUBLIC_URL": "https://api.example.com"}


# --- happy paths --------------------------------------------------------------------------------
async def test_open_link_fund_trade_and_withdraw(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        app = msgspec.to_builtins(application("Ada@Example.com"))
        created = await w.ok("POST", "/create-alpaca-account", ALICE, {"userId": ALICE, "alpacaData": app})
        assert set(created) == {"id", "account_number", "status", "created_at"}
        assert created["status"] == "SUBMITTED"
        account_id = created["id"]
        record = w.store.get_account(account_id)
        assert record is not None and record.user_id == ALICE
        assert (record.account_number, record.email, record.status) == (
            created["account_number"], "ada@example.com", "submitted")

        account = await w.ok("GET", f"/api/account/{account_id}")
        assert account["status"] == "ACTIVE" and account["cash"] == "0.00"
        assert w.store.get_account(account_id).status == "active"

        # the owner's name comes from the account's identity, whatever the body says
        manual = await w.ok("POST", "/create-ach-relationship-manual", ALICE,
                            {"accountId": account_id, **BANK, "accountOwnerName": "Mallory Mule"})
        assert set(manual) == {"id", "status", "created_at"} and manual["status"] == "APPROVED"
        assert [r.account_owner_name for r in w.broker.list_ach_relationships(account_id)] == ["Ada Lovelace"]
        banks = await w.ok("GET", "/get-ach-relationships", params={"accountId": account_id})
        assert banks == {"relationships": [{
            "id": manual["id"], "status": "APPROVED", "bank_name": None, "bank_account_type": "CHECKING",
            "last_4": "6789", "nickname": "Main checking", "created_at": manual["created_at"],
            "needs_relink": False}]}

        # a JSON number, parsed exactly (no float detour)
        raw = b'{"accountId": "%s", "relationshipId": "%s", "amount": 1000.10, "direction": "INCOMING"}' % (
            account_id.encode(), manual["id"].encode())
        deposit = await w.ok("POST", "/initiate-ach-transfer", raw=raw)
        assert set(deposit) == {"id", "status", "amount", "direction", "created_at"}
        assert (deposit["status"], deposit["amount"], deposit["direction"]) == ("QUEUED", "1000.10", "INCOMING")
        assert (await w.ok("GET", f"/api/account/{account_id}"))["cash"] == "0.00"  # not usable until complete

        w.clock.set(TUE_MORNING)
        account = await w.ok("GET", f"/api/account/{account_id}")
        assert (account["cash"], account["cash_withdrawable"], account["buying_power"]) == ("1000.10",) * 3
        transfers = (await w.ok("GET", f"/api/account/{account_id}/transfers"))["transfers"]
        assert [(t["id"], t["status"], t["amount"]) for t in transfers] == [(deposit["id"], "COMPLETE", "1000.10")]

        set_price(w.redis_url, "AAPL", 100.0)
        buy = await w.ok("POST", "/api/trade", ALICE,
                         {"accountId": account_id, "ticker": "aapl", "side": "BUY", "notional_amount": "250.50"})
        assert (buy["symbol"], buy["side"], buy["status"]) == ("AAPL", "buy", "filled")
        assert (buy["notional"], Decimal(buy["filled_qty"]), Decimal(buy["filled_avg_price"])) == (
            "250.50", Decimal("2.505"), 100)
        sell = await w.ok("POST", "/api/trade", ALICE,
                          {"accountId": account_id, "symbol": "AAPL", "side": "SELL", "qty": 1,
                           "client_order_id": "sell-1"})
        assert (sell["status"], Decimal(sell["filled_qty"]), sell["client_order_id"]) == ("filled", 1, "sell-1")

        account = await w.ok("GET", f"/api/account/{account_id}")
        assert account["cash"] == "849.60"  # 1000.10 - 250.50 + 100.00
        assert account["cash_withdrawable"] == "749.60"  # the sale settles T+1
        assert account["equity"] == "1000.10"  # 849.60 + 1.505 x 100
        assert (account["daytrade_count"], account["pattern_day_trader"]) == (1, False)

        orders = await w.ok("GET", f"/api/portfolio/{account_id}/orders")
        assert {o["id"] for o in orders["orders"]} == {buy["id"], sell["id"]}
        closed = await w.ok("GET", f"/api/portfolio/{account_id}/orders", params={"status": "closed"})
        assert len(closed["orders"]) == 2
        assert (await w.ok("GET", f"/api/portfolio/{account_id}/orders", params={"status": "open"}))["orders"] == []
        activities = (await w.ok("GET", f"/api/portfolio/{account_id}/activities"))["activities"]
        assert sorted(a["activity_type"] for a in activities) == ["CSD", "FILL", "FILL"]
        assert {a["net_amount"] for a in activities} == {"1000.10", "-250.50", "100.00"}

        withdrawal = await w.ok("POST", "/initiate-ach-transfer", ALICE,
                                {"accountId": account_id, "relationshipId": manual["id"], "amount": "700",
                                 "direction": "OUTGOING"})
        assert (withdrawal["status"], withdrawal["amount"]) == ("QUEUED", "700.00")
        assert (await w.ok("GET", f"/api/account/{account_id}"))["cash"] == "149.60"


async def test_limit_order_rests_and_is_cancelled(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        account_id, _ = await w.funded("1000")
        set_price(w.redis_url, "MSFT", 50.0)
        limit = await w.ok("POST", "/api/trade", ALICE, {
            "accountId": account_id, "ticker": "MSFT", "side": "buy", "qty": "4", "order_type": "limit",
            "limit_price": 45.5})
        assert (limit["status"], limit["limit_price"], limit["type"]) == ("new", "45.5", "limit")
        assert (await w.ok("GET", f"/api/account/{account_id}"))["buying_power"] == "818.00"  # 4 x 45.50 set aside
        open_orders = await w.ok("GET", f"/api/portfolio/{account_id}/orders", params={"status": "open"})
        assert [o["id"] for o in open_orders["orders"]] == [limit["id"]]

        cancelled = await w.ok("DELETE", f"/api/portfolio/{account_id}/orders/{limit['id']}")
        assert (cancelled["id"], cancelled["status"]) == (limit["id"], "canceled")
        assert (await w.ok("GET", f"/api/account/{account_id}"))["buying_power"] == "1000.00"

        filled = await w.ok("POST", "/api/trade", ALICE,
                            {"accountId": account_id, "ticker": "MSFT", "side": "BUY", "notional": 10})
        before = await w.ledger(account_id)
        assert_error(await w.call("DELETE", f"/api/portfolio/{account_id}/orders/{filled['id']}"), 422,
                     "not_cancelable")
        assert_error(await w.call("DELETE", f"/api/portfolio/{account_id}/orders/no-such-order"), 404)
        assert await w.ledger(account_id) == before


async def test_one_active_bank_link_delete_and_relink(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        account_id = await w.open_account()
        first = await w.link_bank(account_id)
        second = await w.call("POST", "/create-ach-relationship-manual", ALICE, {"accountId": account_id, **BANK})
        assert_error(second, 409, "ach_relationship_exists")
        banks = await w.ok("GET", "/get-ach-relationships", params={"accountId": account_id})
        assert [b["id"] for b in banks["relationships"]] == [first]

        assert await w.ok("DELETE", f"/ach-relationships/{account_id}/{first}") == {"id": first, "deleted": True}
        assert (await w.ok("GET", "/get-ach-relationships", params={"accountId": account_id}))["relationships"] == []
        gone = await w.call("POST", "/initiate-ach-transfer", ALICE,
                            {"accountId": account_id, "relationshipId": first, "amount": 5, "direction": "INCOMING"})
        assert_error(gone, 422, "ach_not_approved")
        assert_error(await w.call("DELETE", f"/ach-relationships/{account_id}/no-such-link"), 404)

        again = await w.link_bank(account_id)
        banks = await w.ok("GET", "/get-ach-relationships", params={"accountId": account_id})
        assert [b["id"] for b in banks["relationships"]] == [again]

        # a relationship of another account cannot fund this one
        bob_account = await w.open_account(BOB, "bob@example.com")
        bob_link = await w.link_bank(bob_account, BOB)
        before = await w.ledger(account_id)
        foreign = await w.call("POST", "/initiate-ach-transfer", ALICE,
                               {"accountId": account_id, "relationshipId": bob_link, "amount": 5,
                                "direction": "INCOMING"})
        assert_error(foreign, 404, "ach_not_found")
        assert await w.ledger(account_id) == before
        assert (await w.ok("GET", f"/api/account/{bob_account}/transfers", BOB))["transfers"] == []


# --- bad input ----------------------------------------------------------------------------------
async def test_create_account_bad_input_and_conflicts(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        good = msgspec.to_builtins(application("ada@example.com"))
        path = "/create-alpaca-account"
        assert_error(await w.call("POST", path, ALICE, {"alpacaData": good}, api_key=None), 401)
        assert_error(await w.call("POST", path, ALICE, {"alpacaData": good}, api_key="wrong-key"), 401)
        assert_error(await w.call("POST", path, None, {"alpacaData": good}), 401)
        assert_error(await w.call("POST", path, raw=b'{"alpacaData": {'), 400, "bad_request")
        assert_error(await w.call("POST", path, raw=b""), 400, "bad_request")
        assert_error(await w.call("POST", path, body=[good]), 422, "invalid_request")
        missing = assert_error(await w.call("POST", path, body={"userId": ALICE}), 422, "invalid_request")
        assert "alpacaData" in missing["details"]["reason"]
        wrong_type = json.loads(json.dumps(good))
        wrong_type["disclosures"]["is_control_person"] = "no"
        details = assert_error(await w.call("POST", path, body={"alpacaData": wrong_type}), 422)["details"]
        assert details["path"] == "$.alpacaData.disclosures.is_control_person"
        bad_email = json.loads(json.dumps(good))
        bad_email["contact"]["email_address"] = "not-an-email"
        assert_error(await w.call("POST", path, body={"alpacaData": bad_email}), 422)
        minor = msgspec.to_builtins(application("kid@example.com", date_of_birth="2015-01-01"))
        assert_error(await w.call("POST", path, body={"alpacaData": minor}), 422, "invalid_request")
        other = await w.call("POST", path, ALICE, {"userId": BOB, "alpacaData": good})
        assert_error(other, 403, "forbidden")
        assert w.store.accounts_of(ALICE) == [] and w.store.accounts_of(BOB) == []
        assert w.broker.list_account_ids() == []

        created = await w.ok("POST", path, ALICE, {"alpacaData": good})  # userId may be left out
        taken = msgspec.to_builtins(application("ADA@example.com"))
        assert_error(await w.call("POST", path, BOB, {"userId": BOB, "alpacaData": taken}), 409, "email_in_use")
        assert [a.account_id for a in w.store.accounts_of(ALICE)] == [created["id"]]
        assert w.store.accounts_of(BOB) == [] and w.broker.list_account_ids() == [created["id"]]


@contextlib.contextmanager
def store_writes_fail(store_file: Path) -> Iterator[None]:
    """The store cannot record a new account (as when its database goes away mid-request): a trigger
    on the real SQLite file that makes every insert of an ownership fail."""
    with contextlib.closing(sqlite3.connect(store_file)) as db:
        db.execute("CREATE TRIGGER store_down BEFORE INSERT ON user_accounts BEGIN"
                   " INSERT INTO store_unreachable VALUES (1); END")
        db.commit()
    try:
        yield
    finally:
        with contextlib.closing(sqlite3.connect(store_file)) as db:
            db.execute("DROP TRIGGER store_down")
            db.commit()


async def test_an_account_the_store_failed_to_record_goes_to_its_applicant_on_retry(
    tmp_path: Path, redis_url: str
) -> None:
    async with world(tmp_path, redis_url) as w:
        path = "/create-alpaca-account"
        ada = msgspec.to_builtins(application("ada@example.com"))
        with store_writes_fail(tmp_path / "store.db"):
            assert_error(await w.call("POST", path, ALICE, {"alpacaData": ada}), 503, "store_unavailable")
        orphan = w.broker.list_account_ids()
        assert len(orphan) == 1 and w.store.accounts_of(ALICE) == []  # opened at the broker, owned by nobody

        # nobody else gets the account (or the email), whatever name they give
        assert_error(await w.call("POST", path, BOB, {"alpacaData": ada}), 409, "email_in_use")
        assert w.store.accounts_of(BOB) == [] and w.store.owner_of(orphan[0]) is None

        impostor = msgspec.to_builtins(application("ada@example.com", given_name="Eve"))
        assert_error(await w.call("POST", path, ALICE, {"alpacaData": impostor}), 409, "email_in_use")
        attached = await w.ok("POST", path, ALICE, {"alpacaData": ada})  # the applicant's retry
        assert attached["id"] == orphan[0] and w.store.owner_of(orphan[0]) == ALICE
        assert w.broker.list_account_ids() == orphan  # attached, not opened twice
        assert (await w.ok("GET", f"/api/account/{orphan[0]}"))["status"] == "ACTIVE"
        again = await w.ok("POST", path, ALICE, {"alpacaData": ada})  # a retry after a lost answer
        assert again == {**attached, "status": again["status"]}
        assert_error(await w.call("POST", path, BOB, {"alpacaData": ada}), 409, "email_in_use")


async def test_a_refused_application_leaves_the_email_free(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        path = "/create-alpaca-account"
        minor = msgspec.to_builtins(application("kim@example.com", date_of_birth="2015-01-01"))
        assert_error(await w.call("POST", path, ALICE, {"alpacaData": minor}), 422, "invalid_request")
        created = await w.ok("POST", path, BOB, {"alpacaData": msgspec.to_builtins(application("kim@example.com"))})
        assert w.store.owner_of(created["id"]) == BOB and w.store.accounts_of(ALICE) == []
        assert_error(await w.call("POST", path, ALICE, {"alpacaData": msgspec.to_builtins(
            application("Kim@Example.com"))}), 409, "email_in_use")


async def test_transfer_amounts_are_validated_and_nothing_moves(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        account_id, rel_id = await w.funded("500")
        before = await w.ledger(account_id)
        base = {"accountId": account_id, "relationshipId": rel_id, "direction": "INCOMING"}
        for amount in (0, "0.00", -5, "-5", 1.005, "10.001", "0.001", "abc", True, None, "NaN", "Infinity",
                       "1e12", [], {}):
            response = await w.call("POST", "/initiate-ach-transfer", ALICE, {**base, "amount": amount})
            details = assert_error(response, 422)["details"]
            assert "amount" in json.dumps(details), (amount, details)
        for body in ({**base, "amount": 5, "direction": "SIDEWAYS"}, {"accountId": account_id, "amount": 5,
                     "direction": "INCOMING"}, {**base, "amount": 5, "accountId": ""}):
            assert_error(await w.call("POST", "/initiate-ach-transfer", ALICE, body), 422, "invalid_request")
        malformed = await w.call("POST", "/initiate-ach-transfer", raw=b'{"accountId": "x", "amount": 1.0.0}')
        assert_error(malformed, 400, "bad_request")
        too_much = await w.call("POST", "/initiate-ach-transfer", ALICE,
                                {**base, "direction": "OUTGOING", "amount": "500.01"})
        assert_error(too_much, 422, "insufficient_funds")
        unknown = await w.call("POST", "/initiate-ach-transfer", ALICE, {**base, "accountId": "acct-nope", "amount": 5})
        assert_error(unknown, 403, "forbidden")
        assert await w.ledger(account_id) == before

        exact = await w.ok("POST", "/initiate-ach-transfer", ALICE, {**base, "amount": "25.5"})
        assert exact["amount"] == "25.50"


async def test_invalid_bank_details_are_422_and_nothing_is_linked(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        account_id = await w.open_account()
        path = "/create-ach-relationship-manual"
        for routing in ("123456789", "121000359", "000000000"):
            response = await w.call(
                "POST", path, ALICE, {"accountId": account_id, **BANK, "bankRoutingNumber": routing}
            )
            assert assert_error(response, 422, "invalid_routing_number")["details"] == {"field": "bankRoutingNumber"}
        for change in ({"bankRoutingNumber": "12100035"}, {"bankRoutingNumber": "12100035x"},
                       {"bankRoutingNumber": 121000358}, {"bankAccountNumber": "12"},
                       {"bankAccountNumber": "12345678901234567890"}, {"bankAccountType": "BROKERAGE"}):
            response = await w.call("POST", path, ALICE, {"accountId": account_id, **BANK, **change})
            assert_error(response, 422, "invalid_request")
        assert_error(await w.call("POST", path, ALICE, {"accountId": account_id}), 422, "invalid_request")
        assert_error(await w.call("POST", path, raw=b"{'accountId': 1}"), 400, "bad_request")
        assert_error(await w.call("GET", "/get-ach-relationships"), 422, "invalid_request")
        assert w.broker.list_ach_relationships(account_id) == []
        assert_error(await w.call("POST", path, ALICE, {"accountId": "acct-nope", **BANK}), 403, "forbidden")


async def test_bad_trades_are_refused_and_nothing_moves(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        account_id, _ = await w.funded("100")
        set_price(w.redis_url, "IBM", 20.0)
        before = await w.ledger(account_id)
        base = {"accountId": account_id, "ticker": "IBM", "side": "BUY"}
        invalid = [
            {**base, "notional_amount": 0.5}, {**base, "notional_amount": "0.999"}, {**base, "notional": -10},
            {**base, "notional_amount": "1.001"}, {**base, "qty": 0}, {**base, "qty": "-1"},
            {**base, "qty": "0.0000000001"}, {**base, "qty": 1, "notional": 5}, {**base},
            {"accountId": account_id, "side": "BUY", "qty": 1}, {**base, "symbol": "MSFT", "qty": 1},
            {**base, "ticker": "not a ticker!", "qty": 1}, {**base, "side": "HOLD", "qty": 1},
            {**base, "qty": 1, "order_type": "stop"}, {**base, "qty": 1, "order_type": "limit"},
            {**base, "notional": 5, "order_type": "limit", "limit_price": 19},
            {**base, "qty": 1, "limit_price": 19}, {**base, "qty": 1, "order_type": "limit", "limit_price": "19.001"},
            {**base, "qty": True}, {**base, "notional": "NaN"}, {**base, "qty": 1, "time_in_force": "ioc"},
        ]
        for body in invalid:
            assert_error(await w.call("POST", "/api/trade", ALICE, body), 422, "invalid_request")
        refused = [
            ({**base, "side": "SELL", "qty": 1}, "no_position"),  # a sell needs the position
            ({**base, "ticker": "ZZZZ", "qty": 1}, "no_price"),
            ({**base, "notional_amount": "100.01"}, "insufficient_buying_power"),
        ]
        for body, code in refused:
            assert_error(await w.call("POST", "/api/trade", ALICE, body), 422, code)
        assert_error(await w.call("POST", "/api/trade", raw=b'{"accountId": '), 400, "bad_request")
        assert_error(
            await w.call("POST", "/api/trade", ALICE, {**base, "accountId": "acct-nope", "qty": 1}), 403, "forbidden"
        )
        assert_error(await w.call("GET", f"/api/portfolio/{account_id}/orders", params={"status": "sideways"}), 422)
        assert await w.ledger(account_id) == before

        exact = await w.ok("POST", "/api/trade", ALICE, {**base, "notional_amount": 100})
        assert (Decimal(exact["filled_qty"]), exact["notional"]) == (5, "100.00")


async def test_pre_trade_rules_are_the_routes_and_refusals_leave_the_ledger_alone(
    tmp_path: Path, redis_url: str
) -> None:
    """A sell needs the position and an order by qty is worth $1, checked by the route for every broker
    (the Alpaca twin is in test_brokerage_routes_alpaca.py); a refusal records nothing."""
    async with world(tmp_path, redis_url) as w:
        account_id, _ = await w.funded("100")
        set_price(w.redis_url, "IBM", 20.0)
        base = {"accountId": account_id, "ticker": "IBM"}

        async def refused(body: dict[str, Any], code: str) -> None:
            before = await w.ledger(account_id)
            assert_error(await w.call("POST", "/api/trade", ALICE, {**base, **body}), 422, code)
            assert await w.ledger(account_id) == before, body

        await refused({"side": "SELL", "qty": 1}, "no_position")
        await refused({"side": "SELL", "notional": 5}, "no_position")
        await refused({"side": "BUY", "qty": "0.04"}, "below_minimum")  # $0.80 at $20
        await refused({"side": "BUY", "qty": "0.1", "order_type": "limit", "limit_price": "9.99"}, "below_minimum")
        await refused({"side": "BUY", "ticker": "ZZZZ", "qty": 1}, "no_price")
        redis_client = redis.Redis.from_url(w.redis_url)
        redis_client.set("price:JUNK", b"{not a price")
        redis_client.close()
        await refused({"side": "BUY", "ticker": "JUNK", "qty": 1}, "no_price")  # malformed is no price, not a 400
        assert (await w.ledger(account_id))["orders"] == []

        await w.ok("POST", "/api/trade", ALICE, {**base, "side": "BUY", "qty": 2})
        await refused({"side": "SELL", "qty": "2.5"}, "insufficient_qty")
        await refused({"side": "SELL", "notional": "40.01"}, "insufficient_qty")
        await refused({"side": "SELL", "qty": "0.01"}, "below_minimum")
        resting = await w.ok("POST", "/api/trade", ALICE,
                             {**base, "side": "SELL", "qty": "1.5", "order_type": "limit", "limit_price": 30})
        await refused({"side": "SELL", "qty": 1}, "insufficient_qty")  # 1.5 of the 2 are promised to the limit
        await w.ok("DELETE", f"/api/portfolio/{account_id}/orders/{resting['id']}")

        # all of a position worth under $1 may go: that is how dust leaves the account
        set_price(w.redis_url, "IBM", 0.25)
        sell_all = {**base, "side": "SELL", "qty": 2, "client_order_id": "sell-dust"}
        sold = await w.ok("POST", "/api/trade", ALICE, sell_all)
        assert (sold["status"], Decimal(sold["filled_qty"])) == ("filled", 2)
        again = await w.ok("POST", "/api/trade", ALICE, sell_all)  # a retry finds the order, not "no position"
        assert again["id"] == sold["id"]
        assert (await w.ledger(account_id))["positions"] == []


async def test_someone_elses_account_and_an_unknown_one_are_the_same_403_everywhere(
    tmp_path: Path, redis_url: str
) -> None:
    async with world(tmp_path, redis_url) as w:
        account_id, rel_id = await w.funded("300")
        set_price(w.redis_url, "AAPL", 10.0)
        order = await w.ok("POST", "/api/trade", ALICE, {
            "accountId": account_id, "ticker": "AAPL", "side": "BUY", "qty": 2, "order_type": "limit",
            "limit_price": 9})
        before = await w.ledger(account_id)

        def requests(acct: str) -> list[tuple[str, str, Any, dict[str, str] | None]]:
            return [
                ("GET", f"/api/account/{acct}", None, None),
                ("GET", f"/api/account/{acct}/transfers", None, None),
                ("POST", "/create-ach-relationship-manual", {"accountId": acct, **BANK}, None),
                ("GET", "/get-ach-relationships", None, {"accountId": acct}),
                ("DELETE", f"/ach-relationships/{acct}/{rel_id}", None, None),
                ("POST", "/create-ach-relationship-link", {"accountId": acct}, None),
                ("POST", "/exchange-plaid-token", {"accountId": acct, "publicToken": "public-sandbox-x"}, None),
                ("POST", "/initiate-ach-transfer",
                 {"accountId": acct, "relationshipId": rel_id, "amount": "10", "direction": "OUTGOING"}, None),
                ("POST", "/api/trade", {"accountId": acct, "ticker": "AAPL", "side": "BUY", "qty": 1}, None),
                ("GET", f"/api/portfolio/{acct}/orders", None, None),
                ("DELETE", f"/api/portfolio/{acct}/orders/{order['id']}", None, None),
                ("GET", f"/api/portfolio/{acct}/activities", None, None),
            ]

        for method, path, body, params in requests(account_id):
            foreign = assert_error(await w.call(method, path, BOB, body, params=params), 403, "forbidden")
            assert_error(await w.call(method, path, None, body, params=params), 401, "unauthorized")
            assert_error(await w.call(method, path, ALICE, body, params=params, api_key=None), 401, "unauthorized")
        for method, path, body, params in requests("acct-nope"):
            unknown = assert_error(await w.call(method, path, ALICE, body, params=params), 403, "forbidden")
            assert unknown["message"] == foreign["message"]  # nothing tells an existing account from a made-up one
        assert await w.ledger(account_id) == before
        assert (await w.ledger(account_id))["orders"][0]["status"] == "new"


# --- Plaid --------------------------------------------------------------------------------------
async def test_plaid_link_exchange_and_webhook(tmp_path: Path, redis_url: str, plaid_standin: PlaidStandin) -> None:
    async with world(tmp_path, redis_url, **plaid_env(plaid_standin)) as w:
        account_id = await w.open_account()
        link = await w.ok("POST", "/create-ach-relationship-link", ALICE,
                          {"accountId": account_id, "redirectUri": "https://app.example.com/callback"})
        assert set(link) == {"link_url", "link_token"} and link["link_url"].startswith("https://")
        sent = plaid_standin.link_tokens[link["link_token"]]
        assert sent["user"] == {"client_user_id": ALICE}
        assert sent["redirect_uri"] == "https://app.example.com/callback"
        assert sent["webhook"] == "https://api.example.com/plaid/webhook"

        forged = await w.call("POST", "/exchange-plaid-token", ALICE,
                              {"accountId": account_id, "publicToken": "public-sandbox-forged"})
        assert forged.status_code in (400, 422) and "error" in forged.json()
        assert w.broker.list_ach_relationships(account_id) == []

        rel = await w.ok("POST", "/exchange-plaid-token", ALICE,
                         {"accountId": account_id, "publicToken": sandbox_public_token(plaid_standin)})
        assert set(rel) == {
            "id", "status", "bank_name", "bank_account_type", "last_4", "nickname", "created_at", "needs_relink"}
        assert rel["needs_relink"] is False
        assert rel["status"] == "APPROVED" and len(rel["last_4"]) == 4
        banks = await w.ok("GET", "/get-ach-relationships", params={"accountId": account_id})
        assert [b["id"] for b in banks["relationships"]] == [rel["id"]]
        items_before = len(plaid_standin.items)
        second = await w.call("POST", "/exchange-plaid-token", ALICE,
                              {"accountId": account_id, "publicToken": sandbox_public_token(plaid_standin)})
        assert_error(second, 409)
        assert len(plaid_standin.items) == items_before  # the second Item was removed again
        assert [r.id for r in w.broker.list_ach_relationships(account_id)] == [rel["id"]]

        signed = {"Plaid-Verification": plaid_standin.sign_webhook(ITEM_LOGIN), "Content-Type": "application/json"}
        ack = await w.http.post("/plaid/webhook", content=ITEM_LOGIN, headers=signed)
        assert ack.status_code == 200, ack.text
        assert ack.json() == {"received": True, "webhook_type": "ITEM", "webhook_code": "ERROR", "needs_relink": True,
                              "bank_links": 0}  # item-9 backs no bank link here
        tampered = ITEM_LOGIN.replace(b"item-9", b"item-8")
        assert_error(await w.http.post("/plaid/webhook", content=tampered, headers=signed), 401, "webhook_unverified")
        assert_error(await w.http.post("/plaid/webhook", content=ITEM_LOGIN), 401, "webhook_unverified")


def signed_webhook(standin: PlaidStandin, body: bytes) -> dict[str, str]:
    return {"Plaid-Verification": standin.sign_webhook(body), "Content-Type": "application/json"}


def item_webhook(item_id: str, code: str, error_code: str | None = None) -> bytes:
    payload: dict[str, Any] = {
        "webhook_type": "ITEM", "webhook_code": code, "item_id": item_id, "environment": "sandbox"}
    if error_code is not None:
        payload["error"] = {"error_type": "ITEM_ERROR", "error_code": error_code, "error_message": "login changed"}
    return json.dumps(payload).encode()


async def test_plaid_webhooks_are_recorded_on_the_bank_link_of_their_item(
    tmp_path: Path, redis_url: str, plaid_standin: PlaidStandin
) -> None:
    async with world(tmp_path, redis_url, **plaid_env(plaid_standin)) as w:
        account_id = await w.open_account()
        public_token = sandbox_public_token(plaid_standin)
        item_id = plaid_standin.items[plaid_standin.public_tokens[public_token]]["item_id"]  # Plaid's side knows it
        rel = await w.ok("POST", "/exchange-plaid-token", ALICE, {"accountId": account_id, "publicToken": public_token})

        async def banks() -> dict[str, bool]:
            listed = await w.ok("GET", "/get-ach-relationships", params={"accountId": account_id})
            return {b["id"]: b["needs_relink"] for b in listed["relationships"]}

        async def send(body: bytes) -> httpx.Response:
            return await w.http.post("/plaid/webhook", content=body, headers=signed_webhook(plaid_standin, body))

        assert await banks() == {rel["id"]: False}
        login = await send(item_webhook(item_id, "ERROR", "ITEM_LOGIN_REQUIRED"))
        assert login.status_code == 200, login.text
        assert login.json() == {"received": True, "webhook_type": "ITEM", "webhook_code": "ERROR",
                                "needs_relink": True, "bank_links": 1}
        assert await banks() == {rel["id"]: True}
        [link] = w.store.bank_links_of(account_id)
        assert (link.relationship_id, link.item_id, link.last_event) == (
            rel["id"], item_id, "ITEM/ERROR ITEM_LOGIN_REQUIRED")

        # a webhook that says nothing of the login is recorded and leaves the flag; another Item's changes nothing
        other = await send(item_webhook(item_id, "WEBHOOK_UPDATE_ACKNOWLEDGED"))
        assert (other.status_code, other.json()["bank_links"], other.json()["needs_relink"]) == (200, 1, False)
        assert w.store.bank_links_of(account_id)[0].last_event == "ITEM/WEBHOOK_UPDATE_ACKNOWLEDGED"
        unknown = await send(item_webhook("item-nobody-linked", "PENDING_DISCONNECT"))
        assert (unknown.status_code, unknown.json()["bank_links"], unknown.json()["needs_relink"]) == (200, 0, True)
        assert await banks() == {rel["id"]: True}

        # the user fixed the login elsewhere: Plaid says so and the notice goes
        repaired = await send(item_webhook(item_id, "LOGIN_REPAIRED"))
        assert (repaired.status_code, repaired.json()["bank_links"]) == (200, 1)
        assert await banks() == {rel["id"]: False}
        await send(item_webhook(item_id, "PENDING_EXPIRATION"))
        assert await banks() == {rel["id"]: True}

        # malformed bodies, signed as Plaid would: the documented error, nothing recorded
        before = w.store.bank_links_of(account_id)
        missing_code = json.dumps({"webhook_type": "ITEM", "item_id": item_id}).encode()
        numeric_code = json.dumps({"webhook_type": "ITEM", "webhook_code": 7, "item_id": item_id}).encode()
        for body in (b"webhook_type=ITEM", b"[1, 2]", missing_code, numeric_code):
            assert_error(await send(body), 422, "invalid_request")
        assert w.store.bank_links_of(account_id) == before
        # and the verification stays: unsigned or altered, nothing is recorded
        body = item_webhook(item_id, "LOGIN_REPAIRED")
        assert_error(await w.http.post("/plaid/webhook", content=body), 401, "webhook_unverified")
        forged = signed_webhook(plaid_standin, item_webhook(item_id, "ERROR"))
        assert_error(await w.http.post("/plaid/webhook", content=body, headers=forged), 401, "webhook_unverified")
        assert await banks() == {rel["id"]: True}


async def test_unconfigured_plaid_and_missing_broker_are_503(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        account_id = await w.open_account()
        for path, body in (("/create-ach-relationship-link", {"accountId": account_id}),
                           ("/exchange-plaid-token", {"accountId": account_id, "publicToken": "public-sandbox-x"})):
            assert "PLAID_CLIENT_ID" in assert_error(await w.call("POST", path, ALICE, body), 503)["message"]
        assert_error(await w.http.post("/plaid/webhook", content=ITEM_LOGIN), 503, "plaid_not_configured")
        assert (await w.ok("GET", "/get-ach-relationships", params={"accountId": account_id}))["relationships"] == []

    async with world(tmp_path / "nobroker", redis_url, with_broker=False) as w:
        w.store.add_account(ALICE, "acct-1", status="active")
        error = assert_error(await w.call("GET", "/api/account/acct-1"), 503, "unavailable")
        assert "broker" in error["message"]
        app = msgspec.to_builtins(application())
        assert_error(await w.call("POST", "/create-alpaca-account", ALICE, {"alpacaData": app}), 503)
        assert w.store.accounts_of(ALICE)[0].account_id == "acct-1" and len(w.store.accounts_of(ALICE)) == 1


async def test_build_app_mounts_and_documents_every_brokerage_route(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(redis_url, tmp_path)
    store = SqlStore(Database(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    app = build_app(Services.in_process(settings, redis_url, store))  # the default providers
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        doc = (await client.get("/openapi.json")).json()
    both = [{"ApiKey": [], "BearerJWT": []}]
    expected = {
        ("/create-alpaca-account", "post"), ("/create-ach-relationship-link", "post"),
        ("/exchange-plaid-token", "post"), ("/create-ach-relationship-manual", "post"),
        ("/get-ach-relationships", "get"), ("/ach-relationships/{account_id}/{relationship_id}", "delete"),
        ("/initiate-ach-transfer", "post"), ("/api/account/{account_id}", "get"),
        ("/api/account/{account_id}/transfers", "get"), ("/api/trade", "post"),
        ("/api/portfolio/{account_id}/orders", "get"), ("/api/portfolio/{account_id}/orders/{order_id}", "delete"),
        ("/api/portfolio/{account_id}/activities", "get"),
    }
    for path, method in expected:
        op = doc["paths"][path][method]
        assert op["security"] == both, path
        assert "401" in op["responses"] and ("404" in op["responses"]) == (path != "/create-alpaca-account")
    assert doc["paths"]["/plaid/webhook"]["post"]["security"] == []
    transfer = doc["components"]["schemas"]["TransferBody"]
    assert set(transfer["required"]) == {"accountId", "relationshipId", "amount", "direction"}


async def test_concurrent_withdrawals_retries_and_after_hours_orders(tmp_path: Path, redis_url: str) -> None:
    async with world(tmp_path, redis_url) as w:
        account_id, rel_id = await w.funded("1000")
        out = {"accountId": account_id, "relationshipId": rel_id, "amount": "300", "direction": "OUTGOING"}
        answers = await asyncio.gather(*(w.call("POST", "/initiate-ach-transfer", ALICE, out) for _ in range(6)))
        assert sorted(r.status_code for r in answers) == [200] * 3 + [422] * 3  # never overdrawn
        assert {r.json()["error"]["code"] for r in answers if r.status_code == 422} == {"insufficient_funds"}
        assert (await w.ok("GET", f"/api/account/{account_id}"))["cash"] == "100.00"

        set_price(w.redis_url, "IBM", 20.0)
        buy = {"accountId": account_id, "ticker": "IBM", "side": "BUY", "qty": 2, "client_order_id": "retry-me"}
        first, again = [await w.ok("POST", "/api/trade", ALICE, buy) for _ in range(2)]
        assert again["id"] == first["id"] and first["status"] == "filled"
        assert (await w.ok("GET", f"/api/account/{account_id}"))["cash"] == "60.00"  # filled once

        w.clock.set(TUE_MORNING.replace(hour=22))  # 17:00 in New York: the market is closed
        queued = await w.ok("POST", "/api/trade", ALICE,
                            {"accountId": account_id, "ticker": "IBM", "side": "BUY", "notional": "40"})
        assert queued["status"] == "accepted"
        assert (await w.ok("GET", f"/api/account/{account_id}"))["buying_power"] == "20.00"
        w.clock.set(TUE_MORNING + dt.timedelta(days=1))  # Wednesday's open has passed
        order = next(o for o in (await w.ok("GET", f"/api/portfolio/{account_id}/orders"))["orders"]
                     if o["id"] == queued["id"])
        assert (order["status"], Decimal(order["filled_qty"])) == ("filled", 2)
        assert (await w.ok("GET", f"/api/account/{account_id}"))["cash"] == "20.00"
