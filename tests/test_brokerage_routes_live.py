"""End to end: a trade through `POST /api/trade` moves the live portfolio seen on the WebSocket.

Real parts only: the paper ledger on a SQLite file, the realtime engine's topology on the test Ray
(replay feed -> symbol shard -> portfolio shards reading holdings from the paper broker through
BrokerPositionSource), Redis pub/sub, the gateway under uvicorn and a `websockets` client. The
fill announces itself on `holdings:changed` (the broker's on_change hook), so the new holdings
reach the socket as an event, not by polling.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import free_port
from gateway_support import API_KEY, JWT_SECRET, Gateway, bearer, token
from paper_support import open_account, set_price
from realtime_support import engine_settings, running_engine
from websockets.asyncio.client import ClientConnection, connect

from brokerage.factory import broker_from_settings
from brokerage.models import OrderRequest
from brokerage.paper import PaperBroker
from brokerage.positions import HoldingsNotifier
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine.clock import ManualClock, clock_from_settings
from gateway import routes_brokerage, ws
from gateway.services import Services

UTC = dt.UTC
ALICE = "user-alice"
# The ledger is set up on the two trading days before the replayed world begins (Tue 2012-06-05).
FRI, MON = dt.datetime(2012, 6, 1, 15, 0, tzinfo=UTC), dt.datetime(2012, 6, 4, 15, 0, tzinfo=UTC)


def funded_paper_account(settings: Any, redis_url: str) -> str:
    """An ACTIVE account holding $1,000 deposited on Friday and 1 AAPL bought on Monday at $80.00."""
    clock = ManualClock(FRI)
    prices = RedisPriceReader(redis_url)
    broker = PaperBroker(Database.for_settings(settings.database_url, settings.sqlite_path), clock, prices,
                         settings=settings)
    account_id, rel_id = open_account(broker)
    broker.create_transfer(account_id, rel_id, Decimal("1000"), "INCOMING")
    clock.set(MON)
    set_price(redis_url, "AAPL", 80.0)
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    assert broker.get_account(account_id).cash == Decimal("920.00")
    prices.close()
    client = redis.Redis.from_url(redis_url)
    client.delete("price:AAPL")  # from here on the replay feed prices AAPL, as in production
    client.close()
    return account_id


async def next_snapshot(socket: ClientConnection) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 60))
        if frame.get("type") == "portfolio_update":
            return frame["snapshot"]


def qty_of(snapshot: dict[str, Any], symbol: str) -> float:
    return next((p["qty"] for p in snapshot["positions"] if p["symbol"] == symbol), 0.0)


@pytest.mark.usefixtures("ray_session")
async def test_a_trade_moves_the_live_portfolio_on_the_websocket(tmp_path: Path, redis_url: str) -> None:
    settings = engine_settings(
        redis_url, tmp_path, [], CLERA_POSITIONS="broker", CLERA_REPLAY_START="2012-06-05",
        BACKEND_API_KEY=API_KEY, SUPABASE_JWT_SECRET=JWT_SECRET,
    )
    account_id = funded_paper_account(settings, redis_url)
    store = SqlStore(Database(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.add_account(ALICE, account_id, status="active")
    notifier = HoldingsNotifier(redis_url)
    broker = broker_from_settings(settings, clock_from_settings(settings), RedisPriceReader(redis_url),
                                  on_change=notifier)

    with running_engine(settings, redis_url):
        gateway = Gateway(Services.in_process(settings, redis_url, store, broker), free_port(),
                          [routes_brokerage.routes, ws.routes])
        await gateway.start()
        try:
            async with connect(f"{gateway.ws}/ws/portfolio/{account_id}?token={token(ALICE)}") as socket:
                before = await next_snapshot(socket)
                while qty_of(before, "AAPL") != 1.0:
                    before = await next_snapshot(socket)
                assert before["cash"] == pytest.approx(920.0) and before["source"] == "replay"

                async with httpx.AsyncClient(base_url=gateway.http, headers={"X-API-Key": API_KEY}) as http:
                    response = await http.post("/api/trade", headers=bearer(ALICE), json={
                        "accountId": account_id, "ticker": "AAPL", "side": "BUY", "notional_amount": "200"})
                    assert response.status_code == 200, response.text
                    order = response.json()
                    assert order["status"] == "filled"
                    account = (await http.get(f"/api/account/{account_id}", headers=bearer(ALICE))).json()
                assert account["cash"] == "720.00"
                bought = float(order["filled_qty"])

                after = await next_snapshot(socket)
                while qty_of(after, "AAPL") != pytest.approx(1.0 + bought, abs=1e-9):
                    after = await next_snapshot(socket)
                assert after["seq"] > before["seq"]
                assert after["cash"] == pytest.approx(720.0)
                (aapl,) = after["positions"]
                assert after["positions_value"] == pytest.approx(aapl["qty"] * aapl["last_price"], abs=0.006)
                assert after["total_value"] == pytest.approx(720.0 + after["positions_value"], abs=0.006)
                # the $200 left cash for shares: the invested part of the live value grew by their worth
                grown = after["positions_value"] - before["positions_value"] * aapl["last_price"] / before[
                    "positions"][0]["last_price"]
                assert grown == pytest.approx(bought * aapl["last_price"], abs=0.01)
        finally:
            await gateway.stop()
            notifier.close()
