"""What the API and the WebSocket put on the wire: Decimals in positional notation on every route,
prices to 4 decimals and values to cents in REST and WebSocket frames alike.

Everything is real: the gateway with every route provider under uvicorn, the paper ledger, the chat
runner with the offline model, the closure process, Redis; the prices test runs the engine on Ray.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from agent_support import TUESDAY, paper_world, whole_app
from conftest import free_port
from gateway_support import ALICE, API_KEY, Gateway, make_settings, make_store, publish, snapshot, token
from paper_support import BANK, application
from realtime_support import engine_settings, eventually, running_engine, unique
from websockets.asyncio.client import connect

from brokerage.company_profiles import load_default_company_profiles
from brokerage.models import Order
from engine import calendar
from engine.types import PortfolioSnapshot
from engine.wire import json_encoder, may_hold_decimal
from gateway.services import Services

UTC = dt.UTC
EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def exponents(text: str) -> list[str]:
    """Every JSON number, and every string holding a number, that `text` writes with an exponent."""
    found: list[str] = []

    def number(token: str) -> str:
        if "e" in token.lower():
            found.append(token)
        return token

    def walk(value: Any) -> None:
        if isinstance(value, str) and EXPONENT.fullmatch(value):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(text, parse_float=number, parse_int=number))
    return found


def test_the_encoder_writes_decimals_positionally_whatever_arithmetic_made_them() -> None:
    qty = Decimal("300").normalize()  # what the order rules make of "300": Decimal('3E+2')
    price = Decimal(15).normalize() * Decimal(10).normalize()  # 1.5E+2
    tiny = Decimal("0.1") ** 8  # 1E-8
    assert [str(qty), str(price), str(tiny)] == ["3E+2", "1.5E+2", "1E-8"]  # what msgspec would write
    at = dt.datetime(2012, 6, 4, 14, 0, tzinfo=UTC)
    order = Order(
        id="o-1",
        client_order_id="c-1",
        account_id="a-1",
        symbol="AAPL",
        side="buy",
        type="market",
        time_in_force="day",
        status="filled",
        created_at=at,
        updated_at=at,
        qty=qty,
        filled_qty=qty * 1,
        filled_avg_price=price,
        notional=tiny,
    )
    data = msgspec.json.decode(json_encoder.encode({"orders": [order], "details": {"left": qty - tiny}}))
    (wired,) = data["orders"]
    assert (wired["qty"], wired["filled_qty"], wired["filled_avg_price"], wired["notional"]) == (
        "300", "300", "150", "0.00000001")
    assert data["details"]["left"] == "299.99999999"
    assert Decimal(wired["qty"]) == qty and Decimal(data["details"]["left"]) == qty - tiny  # same numbers, exactly
    assert msgspec.json.decode(json_encoder.encode({"message": "3E+2"})) == {"message": "3E+2"}  # text stays text
    # a type that cannot hold a Decimal goes straight to msgspec, unchanged
    snap = snapshot("a-1", seq=3)
    assert not may_hold_decimal(PortfolioSnapshot) and may_hold_decimal(Order) and may_hold_decimal(dict)
    assert json_encoder.encode(snap) == msgspec.json.encode(snap)


def _fill(path: str, params: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)


async def test_every_route_answers_decimals_in_positional_notation(tmp_path: Path, redis_url: str) -> None:
    """A 300-share order (the order rules normalize it to 3E+2), a notional buy, a resting limit sell,
    a chat order, a closure: then every GET route of the app, the answers of the POSTs, a WebSocket
    frame and the chat's event stream are read, and no number in them is written with an exponent."""
    settings, db, store, clock, broker = paper_world(tmp_path, redis_url)
    gateway = whole_app(tmp_path, redis_url, settings, db, store, clock, broker)
    await gateway.start()
    headers = {"X-API-Key": API_KEY, "Authorization": f"Bearer {token(ALICE)}"}
    answers: list[tuple[str, str]] = []  # (where, body)

    async def call(method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
        response = await http.request(method, path, json=body, params=params or None, headers=headers)
        answers.append((f"{method} {path} ({response.status_code})", response.text))
        return response

    async def ok(method: str, path: str, body: Any = None, **params: str) -> Any:
        response = await call(method, path, body, **params)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    try:
        async with httpx.AsyncClient(base_url=gateway.http, timeout=60) as http:
            app = msgspec.to_builtins(application("ada@example.com"))
            account = (await ok("POST", "/create-alpaca-account", {"userId": ALICE, "alpacaData": app}))["id"]
            bank = {"accountId": account, "bankAccountType": "CHECKING", "nickname": "Main",
                    "bankAccountNumber": BANK.bank_account_number, "bankRoutingNumber": BANK.bank_routing_number}
            relationship = (await ok("POST", "/create-ach-relationship-manual", bank))["id"]
            deposit = await ok("POST", "/initiate-ach-transfer", {"accountId": account, "relationshipId": relationship,
                                                                 "amount": "400000.00", "direction": "INCOMING"})
            clock.set(TUESDAY)
            trade = {"accountId": account, "side": "BUY", "ticker": "AAPL"}
            bought = await ok("POST", "/api/trade", {**trade, "qty": "300"})
            assert (bought["status"], bought["qty"], bought["filled_qty"]) == ("filled", "300", "300")
            await ok("POST", "/api/trade", {**trade, "ticker": "MSFT", "notional_amount": "250.50"})
            await ok("POST", "/api/trade", {**trade, "side": "SELL", "qty": "100", "order_type": "limit",
                                            "limit_price": "9999.00", "time_in_force": "gtc"})
            turn = await ok("POST", "/api/chat", {"message": "buy 40 shares of IBM", "accountId": account})
            resumed = await ok("POST", "/api/chat/resume", {"threadId": turn["threadId"], "decision": "confirm",
                                                            "interruptId": turn["interrupt"]["id"]})
            assert resumed["steps"][-1]["result"]["order"]["qty"] == "40"
            stream = await call("POST", "/api/chat/stream", {"message": "what do I own?", "accountId": account})
            assert stream.status_code == 200 and "data: " in stream.text
            await publish(redis_url, snapshot(account, seq=1))
            params = {"account_id": account, "transfer_id": deposit["id"], "ticker": "AAPL",
                      "thread_id": turn["threadId"]}
            query = {"accountId": account}
            gets = [r.path for r in gateway.app.routes if "GET" in (getattr(r, "methods", None) or ())]

            async def read_every_get() -> None:
                for path in gets:
                    await call("GET", _fill(path, params), **(query if "{" not in path else {}))

            await read_every_get()
            orders = (await ok("GET", f"/api/portfolio/{account}/orders"))["orders"]
            assert {o["symbol"]: o["qty"] for o in orders if o["side"] == "buy" and o["qty"]} == {
                "AAPL": "300", "IBM": "40"}
            fills = (await ok("GET", f"/api/portfolio/{account}/activities"))["activities"]
            assert {a["symbol"]: a["qty"] for a in fills if a["symbol"] in ("AAPL", "IBM")} == {
                "AAPL": "300",
                "IBM": "40",
            }
            initiated = await ok("POST", f"/api/account-closure/initiate/{account}",
                                 {"ach_relationship_id": relationship, "confirm_liquidation": True,
                                  "confirm_irreversible": True})
            assert initiated["success"] is True, initiated
            day = calendar.next_trading_day(clock.now().astimezone(UTC).date())
            clock.set(dt.datetime.combine(day, dt.time(15, 0), UTC))
            await ok("POST", f"/api/account-closure/resume/{account}")
            await read_every_get()
            async with connect(f"{gateway.ws}/ws/portfolio/{account}?token={token(ALICE)}") as ws:
                answers.append(("WS frame", await _raw_frame(ws, lambda _: True)))
    finally:
        await gateway.stop()

    read = [where for where, _ in answers if where.startswith("GET")]
    assert len(read) >= 2 * len(gets) and f"GET /account-closure/progress/{account} (200)" in read
    streamed = next(text for where, text in answers if "stream" in where)
    events = [line.removeprefix("data: ") for line in streamed.splitlines() if line.startswith("data: ")]
    # every JSON body (the interactive docs page at /docs is HTML, and carries no numbers of ours)
    bodies = [(where, text) for where, text in answers if "stream" not in where and not where.startswith("GET /docs ")]
    bodies += [(f"chat stream event {i}", event) for i, event in enumerate(events)]
    assert [(where, bad) for where, text in bodies if (bad := exponents(text))] == []


def _decimals(token: str) -> int:
    return len(token.partition(".")[2])


def _precision(text: str, fields: dict[str, int]) -> dict[str, list[str]]:
    """Each of `fields` (name -> most decimals allowed) as written in `text`, and those written with more."""
    tokens: list[tuple[str, str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        tokens.extend((k, v) for k, v in items if isinstance(v, str) and k in fields)
        return dict(items)

    json.loads(text, parse_float=str, parse_int=str, object_pairs_hook=pairs)
    assert {k for k, _ in tokens} == set(fields), tokens  # every field was there to be checked
    return {name: [v for k, v in tokens if k == name and _decimals(v) > most] for name, most in fields.items()}


POSITION_FIELDS = {"last_price": 4, "prev_close": 4, "market_value": 2, "day_change": 2}
SNAPSHOT_FIELDS = {"total_value": 2, "cash": 2, "positions_value": 2, "day_change": 2, **POSITION_FIELDS}


@pytest.mark.usefixtures("ray_session")
async def test_positions_prices_go_out_to_4_decimals_and_values_to_cents(redis_url: str, tmp_path: Path) -> None:
    """The replay's split-adjusted prices (AAPL's are 14-decimal floats) through the real engine, read
    by REST (/positions, /api/portfolio, /api/company) and by a WebSocket frame."""
    account = unique("wire-prices")
    holdings = {"account_id": account, "cash": "1000.10",
                "positions": [{"symbol": "AAPL", "qty": "7"}, {"symbol": "MSFT", "qty": "3.5"}]}
    settings = engine_settings(redis_url, tmp_path, [holdings])
    store = make_store(tmp_path / "store.db")
    load_default_company_profiles(store)
    store.ensure_user(ALICE)
    store.add_account(ALICE, account, status="active")
    gateway = Gateway(Services.in_process(make_settings(redis_url, tmp_path), redis_url, store), free_port())
    await gateway.start()
    auth = {"Authorization": f"Bearer {token(ALICE)}"}
    try:
        with running_engine(settings, redis_url):
            async with httpx.AsyncClient(base_url=gateway.http, timeout=30) as http:
                async with connect(f"{gateway.ws}/ws/portfolio/{account}?token={token(ALICE)}") as ws:
                    frame = await _raw_frame(ws, lambda f: len(f["snapshot"]["positions"]) == 2)  # both priced

                async def stored() -> bool:
                    return (await http.get(f"/api/portfolio/{account}", headers=auth)).status_code == 200
                await eventually(stored, "a stored snapshot")
                positions = await http.get(f"/api/portfolio/{account}/positions", headers=auth)
                whole = await http.get(f"/api/portfolio/{account}", headers=auth)
                company = await http.get("/api/company/AAPL", headers={"X-API-Key": API_KEY})
    finally:
        await gateway.stop()
    assert _precision(positions.text, POSITION_FIELDS) == {name: [] for name in POSITION_FIELDS}
    assert _precision(whole.text, SNAPSHOT_FIELDS) == {name: [] for name in SNAPSHOT_FIELDS}
    assert _precision(frame, SNAPSHOT_FIELDS) == {name: [] for name in SNAPSHOT_FIELDS}
    assert company.status_code == 200, company.text
    price_fields = {"last": 4, "prev_close": 4, "change": 4}
    assert _precision(company.text, price_fields) == {name: [] for name in price_fields}
    # the values are those of the quoted prices
    for p in whole.json()["positions"]:
        assert p["market_value"] == pytest.approx(p["qty"] * p["last_price"], abs=0.005)


async def _raw_frame(ws: Any, wanted: Callable[[dict[str, Any]], bool]) -> str:
    """The first snapshot frame that satisfies `wanted`, as the text that came over the socket."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), 60)
        frame = json.loads(raw)
        if frame["type"] == "portfolio_update" and wanted(frame):
            return raw

