"""The same brokerage routes with the AlpacaBroker: alpaca-py's BrokerClient against the spec-validating
Broker API stand-in, behind a real uvicorn gateway (real sockets end to end)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
from conftest import free_port
from gateway_support import API_KEY, Gateway, bearer, make_settings
from paper_support import application
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


async def test_alpaca_account_bank_transfer_and_trade_through_the_routes(tmp_path: Path, redis_url: str) -> None:
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

                async def call(method: str, path: str, body: Any = None, user: str = ALICE, **kw: Any) -> httpx.Response:
                    return await http.request(method, path, json=body, headers=bearer(user), **kw)

                async def ok(method: str, path: str, body: Any = None, user: str = ALICE, **kw: Any) -> Any:
                    response = await call(method, path, body, user, **kw)
                    assert response.status_code == 200, response.text
                    return response.json()

                app = msgspec.to_builtins(application("ada@example.com"))
                created = await ok("POST", "/create-alpaca-account", {"userId": ALICE, "alpacaData": app})
                account_id = created["id"]
                assert created["status"] == "SUBMITTED" and store.owner_of(account_id) == ALICE
                assert store.get_account(account_id).account_number == created["account_number"]  # type: ignore[union-attr]
                taken = await call("POST", "/create-alpaca-account", {"alpacaData": app}, BOB)
                assert taken.status_code == 409 and taken.json()["error"]["code"] == "email_in_use"

                account = await ok("GET", f"/api/account/{account_id}")
                assert account["status"] == "ACTIVE" and Decimal(account["cash"]) == 0
                assert store.get_account(account_id).status == "active"  # type: ignore[union-attr]

                rel = await ok("POST", "/create-ach-relationship-manual", {"accountId": account_id, **BANK})
                assert set(rel) == {"id", "status", "created_at"}
                second = await call("POST", "/create-ach-relationship-manual", {"accountId": account_id, **BANK})
                assert second.status_code == 409 and second.json()["error"]["code"] == "conflict"
                banks = await ok("GET", "/get-ach-relationships", params={"accountId": account_id})
                assert [(b["id"], b["last_4"], b["status"]) for b in banks["relationships"]] == [
                    (rel["id"], "6789", "APPROVED")]
                # the owner name Alpaca received came from the account's identity
                assert api.state.ach[rel["id"]]["account_owner_name"] == "Ada Lovelace"

                bad = await call("POST", "/initiate-ach-transfer", {
                    "accountId": account_id, "relationshipId": rel["id"], "amount": "10.001", "direction": "INCOMING"})
                assert bad.status_code == 422
                deposit = await ok("POST", "/initiate-ach-transfer", {
                    "accountId": account_id, "relationshipId": rel["id"], "amount": 500.25, "direction": "INCOMING"})
                assert (deposit["status"], Decimal(deposit["amount"]), deposit["direction"]) == (
                    "QUEUED", Decimal("500.25"), "INCOMING")
                api.complete_transfer(deposit["id"])
                transfers = (await ok("GET", f"/api/account/{account_id}/transfers"))["transfers"]
                assert [(t["id"], t["status"]) for t in transfers] == [(deposit["id"], "COMPLETE")]
                assert Decimal((await ok("GET", f"/api/account/{account_id}"))["cash"]) == Decimal("500.25")

                api.set_price("AAPL", "125.00")
                order = await ok("POST", "/api/trade", {
                    "accountId": account_id, "ticker": "AAPL", "side": "BUY", "notional_amount": "250"})
                assert (order["symbol"], order["side"], order["status"]) == ("AAPL", "buy", "filled")
                assert Decimal(order["filled_qty"]) == 2
                no_shares = await call("POST", "/api/trade", {
                    "accountId": account_id, "ticker": "AAPL", "side": "SELL", "qty": 3})
                assert no_shares.status_code == 422, no_shares.text
                assert Decimal((await ok("GET", f"/api/account/{account_id}"))["cash"]) == Decimal("250.25")
                orders = (await ok("GET", f"/api/portfolio/{account_id}/orders"))["orders"]
                assert [o["id"] for o in orders] == [order["id"]]
                activities = (await ok("GET", f"/api/portfolio/{account_id}/activities"))["activities"]
                assert {a["activity_type"] for a in activities} == {"FILL", "CSD"}

                forbidden = await call("GET", f"/api/account/{account_id}", user=BOB)
                assert forbidden.status_code == 403
        finally:
            await gateway.stop()
