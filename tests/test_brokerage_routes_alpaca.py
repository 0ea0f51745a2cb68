"""The same brokerage routes with the AlpacaBroker: alpaca-py's BrokerClient against the spec-validating
Broker API stand-in, behind a real uvicorn gateway (real sockets end to end)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
from conftest import free_port
from gateway_support import API_KEY, Gateway, bearer, make_settings
from paper_support import application, set_price
from standins.alpaca_broker_api import AlpacaBrokerStandIn

from brokerage.alpaca_broker import AlpacaBroker
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from gateway import routes_brokerage
from gateway.services import Services

KEY, SECRET = "PKROUTES", "routes-secret"
ALICE, BOB = "user-alice", "user-bob"
BANK = {"bankAccountType": "CHECKING", "bankAccountNumber": "000123456789", "bankRoutingNumber": "121000358",
        "nickname": "Main checking"}


@dataclass
class AlpacaWorld:
    api: AlpacaBrokerStandIn
    store: SqlStore
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, body: Any = None, user: str = ALICE, **kw: Any) -> httpx.Response:
        return await self.http.request(method, path, json=body, headers=bearer(user), **kw)

    async def ok(self, method: str, path: str, body: Any = None, user: str = ALICE, **kw: Any) -> Any:
        response = await self.call(method, path, body, user, **kw)
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.asynccontextmanager
async def alpaca_world(tmp_path: Path, redis_url: str) -> AsyncIterator[AlpacaWorld]:
    """The gateway with an AlpacaBroker on the Broker API stand-in and a SQLite store at tmp_path/store.db."""
    store = SqlStore(Database(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    with AlpacaBrokerStandIn(KEY, SECRET) as api:
        settings = make_settings(redis_url, tmp_path, CLERA_BROKER="alpaca", BROKER_API_KEY=KEY,
                                 BROKER_SECRET_KEY=SECRET, CLERA_ALPACA_BROKER_URL=api.url)
        services = Services.in_process(settings, redis_url, store, AlpacaBroker(settings))
        gateway = Gateway(services, free_port(), [routes_brokerage.routes])
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.http, headers={"X-API-Key": API_KEY}, timeout=30) as http:
                yield AlpacaWorld(api, store, http)
        finally:
            await gateway.stop()


async def test_alpaca_account_bank_transfer_and_trade_through_the_routes(tmp_path: Path, redis_url: str) -> None:
    async with alpaca_world(tmp_path, redis_url) as w:
        app = msgspec.to_builtins(application("ada@example.com"))
        created = await w.ok("POST", "/create-alpaca-account", {"userId": ALICE, "alpacaData": app})
        account_id = created["id"]
        assert created["status"] == "SUBMITTED" and w.store.owner_of(account_id) == ALICE
        assert w.store.get_account(account_id).account_number == created["account_number"]
        taken = await w.call("POST", "/create-alpaca-account", {"alpacaData": app}, BOB)
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "email_in_use"

        account = await w.ok("GET", f"/api/account/{account_id}")
        assert account["status"] == "ACTIVE" and Decimal(account["cash"]) == 0
        assert w.store.get_account(account_id).status == "active"

        rel = await w.ok("POST", "/create-ach-relationship-manual", {"accountId": account_id, **BANK})
        assert set(rel) == {"id", "status", "created_at"}
        second = await w.call("POST", "/create-ach-relationship-manual", {"accountId": account_id, **BANK})
        assert second.status_code == 409 and second.json()["error"]["code"] == "ach_relationship_exists"
        banks = await w.ok("GET", "/get-ach-relationships", params={"accountId": account_id})
        assert [(b["id"], b["last_4"], b["status"]) for b in banks["relationships"]] == [
            (rel["id"], "6789", "APPROVED")]
        # the owner name Alpaca received came from the account's identity
        assert w.api.state.ach[rel["id"]]["account_owner_name"] == "Ada Lovelace"

        bad = await w.call("POST", "/initiate-ach-transfer", {
            "accountId": account_id, "relationshipId": rel["id"], "amount": "10.001", "direction": "INCOMING"})
        assert bad.status_code == 422
        deposit = await w.ok("POST", "/initiate-ach-transfer", {
            "accountId": account_id, "relationshipId": rel["id"], "amount": 500.25, "direction": "INCOMING"})
        assert (deposit["status"], Decimal(deposit["amount"]), deposit["direction"]) == (
            "QUEUED", Decimal("500.25"), "INCOMING")
        w.api.complete_transfer(deposit["id"])
        transfers = (await w.ok("GET", f"/api/account/{account_id}/transfers"))["transfers"]
        assert [(t["id"], t["status"]) for t in transfers] == [(deposit["id"], "COMPLETE")]
        assert Decimal((await w.ok("GET", f"/api/account/{account_id}"))["cash"]) == Decimal("500.25")

        w.api.set_price("AAPL", "125.00")
        order = await w.ok("POST", "/api/trade", {
            "accountId": account_id, "ticker": "AAPL", "side": "BUY", "notional_amount": "250"})
        assert (order["symbol"], order["side"], order["status"]) == ("AAPL", "buy", "filled")
        assert Decimal(order["filled_qty"]) == 2
        no_shares = await w.call("POST", "/api/trade", {
            "accountId": account_id, "ticker": "AAPL", "side": "SELL", "qty": 3})
        assert no_shares.status_code == 422, no_shares.text
        assert Decimal((await w.ok("GET", f"/api/account/{account_id}"))["cash"]) == Decimal("250.25")
        orders = (await w.ok("GET", f"/api/portfolio/{account_id}/orders"))["orders"]
        assert [o["id"] for o in orders] == [order["id"]]
        activities = (await w.ok("GET", f"/api/portfolio/{account_id}/activities"))["activities"]
        assert {a["activity_type"] for a in activities} == {"FILL", "CSD"}

        forbidden = await w.call("GET", f"/api/account/{account_id}", user=BOB)
        assert forbidden.status_code == 403


async def test_pre_trade_rules_hold_with_alpaca_and_refusals_never_reach_it(tmp_path: Path, redis_url: str) -> None:
    """Alpaca would take a qty order worth cents (and open a short on a whole-share sell with no
    position on a margin account): the route refuses both with the paper broker's codes, and no
    order request reaches Alpaca."""
    async with alpaca_world(tmp_path, redis_url) as w:
        api = w.api
        app = msgspec.to_builtins(application("ada@example.com"))
        account_id = (await w.ok("POST", "/create-alpaca-account", {"alpacaData": app}))["id"]
        rel = await w.ok("POST", "/create-ach-relationship-manual", {"accountId": account_id, **BANK})
        deposit = await w.ok("POST", "/initiate-ach-transfer", {
            "accountId": account_id, "relationshipId": rel["id"], "amount": "100", "direction": "INCOMING"})
        api.complete_transfer(deposit["id"])
        api.set_price("AAPL", "10.00")
        set_price(redis_url, "AAPL", 10.0)
        base = {"accountId": account_id, "ticker": "AAPL"}

        def orders_sent() -> int:
            return sum(1 for m, p, _ in api.requests_seen() if m == "POST" and p.endswith("/orders"))

        async def refused(body: dict[str, Any], code: str) -> None:
            sent, account = orders_sent(), await w.ok("GET", f"/api/account/{account_id}")
            response = await w.call("POST", "/api/trade", {**base, **body})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == code, response.text
            assert orders_sent() == sent, body  # never reached Alpaca
            assert await w.ok("GET", f"/api/account/{account_id}") == account

        await refused({"side": "SELL", "qty": 1}, "no_position")
        await refused({"side": "BUY", "qty": "0.05"}, "below_minimum")  # Alpaca fills this for $0.50
        await refused({"side": "BUY", "qty": "0.05", "order_type": "limit", "limit_price": "9.00"}, "below_minimum")
        await refused({"side": "BUY", "ticker": "IBM", "qty": 1}, "no_price")  # nobody priced IBM
        assert (await w.ok("GET", f"/api/portfolio/{account_id}/orders"))["orders"] == []

        bought = await w.ok("POST", "/api/trade", {**base, "side": "BUY", "qty": 2})
        assert bought["status"] == "filled" and orders_sent() == 1
        await refused({"side": "SELL", "qty": 3}, "insufficient_qty")
        await refused({"side": "SELL", "notional": "25"}, "insufficient_qty")
        await refused({"side": "SELL", "qty": "0.05"}, "below_minimum")
        sold = await w.ok("POST", "/api/trade", {**base, "side": "SELL", "qty": 2})
        assert (sold["status"], Decimal(sold["filled_qty"])) == ("filled", 2)
        assert orders_sent() == 2 and Decimal((await w.ok("GET", f"/api/account/{account_id}"))["cash"]) == 100


async def test_an_alpaca_account_the_store_failed_to_record_is_found_and_attached(
    tmp_path: Path, redis_url: str
) -> None:
    """The recovery of create_account through Alpaca's own account search."""
    async with alpaca_world(tmp_path, redis_url) as w:
        app = msgspec.to_builtins(application("ada@example.com"))
        with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as db:  # the store's writes now fail
            db.execute("CREATE TRIGGER store_down BEFORE INSERT ON user_accounts BEGIN"
                       " INSERT INTO store_unreachable VALUES (1); END")
            db.commit()
        failed = await w.call("POST", "/create-alpaca-account", {"alpacaData": app})
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable"
        with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as db:
            db.execute("DROP TRIGGER store_down")
            db.commit()
        opened = list(w.api.state.accounts)
        assert len(opened) == 1 and w.store.owner_of(opened[0]) is None

        taken = await w.call("POST", "/create-alpaca-account", {"alpacaData": app}, BOB)
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "email_in_use"
        attached = await w.ok("POST", "/create-alpaca-account", {"alpacaData": app})
        assert attached["id"] == opened[0] and w.store.owner_of(opened[0]) == ALICE
        assert list(w.api.state.accounts) == opened  # found through GET /v1/accounts, not opened again
        assert ("GET", "/v1/accounts", 200) in w.api.requests_seen()
