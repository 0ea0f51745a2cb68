"""REST through a real uvicorn server: health, portfolio reads, company profiles, auth, the error shape."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import time
from decimal import Decimal
from pathlib import Path

import httpx
import msgspec
import pytest
import redis
from conftest import free_port
from gateway_support import (
    ALICE,
    ALICE_ACCOUNT,
    API_KEY,
    BOB,
    BOB_ACCOUNT,
    CORE_PROVIDERS,
    bearer,
    make_settings,
    make_store,
    publish,
    running_gateway,
    snapshot,
    token,
    unsigned_token,
    wrong_audience_token,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from brokerage.errors import Conflict, NotFound, Rejected, Unavailable
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from brokerage.store import CompanyProfile
from engine.types import LastPrice
from engine.wire import json_encoder
from gateway import ApiRoute, json_response, parse_body, require_api_key, require_owner
from gateway.openapi import DECIMAL_PATTERN
from gateway.services import Services


class EchoBody(msgspec.Struct):
    account_id: str
    amount: Decimal

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError("amount must be positive")


class EchoResponse(msgspec.Struct):
    account_id: str
    amount: Decimal
    user: str


async def _echo(request: Request) -> Response:
    require_api_key(request)
    body = await parse_body(request, EchoBody)
    return json_response(EchoResponse(account_id=body.account_id, amount=body.amount * 2, user="service"), 201)


async def _owned(request: Request) -> Response:
    user = await require_owner(request, request.path_params["account_id"])
    return json_response({"user": user})


_RAISES = {"conflict": Conflict("already linked"), "missing": NotFound("no such transfer"),
           "rejected": Rejected("insufficient funds", details={"needed": "10.00"}),
           "down": Unavailable("Plaid is not configured"), "bug": RuntimeError("db password is hunter2")}


async def _raise(request: Request) -> Response:
    raise _RAISES[request.path_params["kind"]]


def _test_routes(_: Services) -> list[BaseRoute]:
    """A later feature's routes, mounted the way routes_brokerage mounts: through the shared helpers."""
    return [
        ApiRoute("/test/echo", _echo, methods=["POST"], auth="api_key", body=EchoBody, response=EchoResponse),
        ApiRoute("/test/owned/{account_id}", _owned, auth="owner"),
        ApiRoute("/test/raise/{kind}", _raise),
    ]


@pytest.fixture
def env(redis_url: str, tmp_path: Path):
    return make_settings(redis_url, tmp_path), make_store(tmp_path / "store.db")


def _assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


async def test_health_routes_report_version_uptime_and_redis(env) -> None:
    settings, store = env
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        for path in ("/api/health", "/health", "/ws/health"):
            response = await http.get(path)
            assert response.status_code == 200
            body = response.json()
            # this gateway cannot see an engine: not knowing is not "ok"
            assert body["status"] == "degraded"
            assert body["version"] == importlib.metadata.version("clera-engine")
            assert body["uptime_s"] >= 0 and body["redis_reachable"] is True
            assert body["engine"]["state"] == "unknown"


async def test_ws_health_answers_the_seeds_shape_beside_the_engine_report(redis_url: str, tmp_path: Path) -> None:
    """The seed's `/ws/health`: status ("healthy" once the engine is seen up: tests/test_entry_points.py;
    "degraded" here, a gateway that cannot see one), service, websocket_host, websocket_port (a string,
    as the seed splits it from WEBSOCKET_SERVICE_URL) and timestamp, where the WebSockets are served."""
    settings, store = make_settings(redis_url, tmp_path), make_store(tmp_path / "store.db")
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        before = dt.datetime.now(dt.UTC)
        body = (await http.get("/ws/health")).json()
        seed = {"status": "degraded", "service": "api-server-websocket-proxy", "websocket_host": settings.host,
                "websocket_port": str(settings.direct_port)}
        assert {k: body[k] for k in seed} == seed
        assert before <= dt.datetime.fromisoformat(body["timestamp"]) <= dt.datetime.now(dt.UTC)
        plain = (await http.get("/api/health")).json()
        assert set(body) == set(plain) | {"service", "websocket_host", "websocket_port", "timestamp"}
        assert body["engine"] == plain["engine"] and body["redis_reachable"] is True
        documented = (await http.get("/openapi.json")).json()["paths"]["/ws/health"]["get"]
        assert documented["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "WsHealthResponse")
    proxy_only = make_settings(redis_url, tmp_path, CLERA_SERVE_DIRECT_INGRESS="false")
    async with running_gateway(proxy_only, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        assert (await http.get("/ws/health")).json()["websocket_port"] == str(proxy_only.port)


async def test_health_says_degraded_when_redis_is_unreachable(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(dead, tmp_path)
    store = make_store(tmp_path / "store.db")
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        response = await http.get("/api/health")
        assert response.status_code == 200
        assert response.json()["status"] == "degraded" and response.json()["redis_reachable"] is False
        # a read that needs Redis says the dependency is unavailable, without internals
        failed = await http.get(f"/api/portfolio/{ALICE_ACCOUNT}", headers=bearer(ALICE))
        assert "127.0.0.1" not in failed.text
        _assert_error(failed, 503, "unavailable")


async def test_a_database_that_cannot_be_reached_is_a_503_not_a_500(redis_url: str, tmp_path: Path) -> None:
    """Every route that reads the store answers 503 `store_unavailable` while the database is down."""
    down = SqlStore(Database(f"postgresql://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2"))
    settings = make_settings(redis_url, tmp_path)
    async with running_gateway(settings, down, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        for path in (f"/api/portfolio/{ALICE_ACCOUNT}", f"/api/portfolio/{ALICE_ACCOUNT}/positions"):
            failed = await http.get(path, headers=bearer(ALICE))
            assert "127.0.0.1" not in failed.text  # no internals in the answer
            _assert_error(failed, 503, "store_unavailable")


async def test_portfolio_and_positions_of_the_owner(env, redis_url: str) -> None:
    settings, store = env
    snap = snapshot(ALICE_ACCOUNT, seq=7, total=123_456.78, change=-321.5, n_positions=3)
    await publish(redis_url, snap)
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        response = await http.get(f"/api/portfolio/{ALICE_ACCOUNT}", headers=bearer(ALICE))
        assert response.status_code == 200
        assert response.json() == msgspec.json.decode(json_encoder.encode(snap))
        response = await http.get(f"/api/portfolio/{ALICE_ACCOUNT}/positions", headers=bearer(ALICE))
        assert response.status_code == 200
        body = response.json()
        assert body["account_id"] == ALICE_ACCOUNT and body["source"] == "replay"
        assert [p["symbol"] for p in body["positions"]] == ["S0", "S1", "S2"]


async def test_portfolio_auth_and_ownership_errors(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1), snapshot(BOB_ACCOUNT, seq=1))
    path = f"/api/portfolio/{ALICE_ACCOUNT}"
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        _assert_error(await http.get(path), 401, "unauthorized")
        # a header naming the user is never trusted on its own
        _assert_error(await http.get(path, headers={"X-User-ID": ALICE}), 401, "unauthorized")
        _assert_error(await http.get(path, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
        _assert_error(await http.get(path, headers={"Authorization": "Bearer not.a.jwt"}), 401, "unauthorized")
        expired = {"Authorization": f"Bearer {token(ALICE, ttl_s=-5)}"}
        assert "expired" in _assert_error(await http.get(path, headers=expired), 401, "unauthorized")["message"]
        forged = {"Authorization": f"Bearer {token(ALICE, secret='x' * 40)}"}
        _assert_error(await http.get(path, headers=forged), 401, "unauthorized")
        for forged_token in (unsigned_token(ALICE), wrong_audience_token(ALICE)):
            _assert_error(
                await http.get(path, headers={"Authorization": f"Bearer {forged_token}"}), 401, "unauthorized"
            )
        # Bob's valid token on Alice's account, even with a header claiming to be Alice
        _assert_error(await http.get(path, headers={**bearer(BOB), "X-User-ID": ALICE}), 403, "forbidden")
        _assert_error(await http.get(f"{path}/positions", headers=bearer(BOB)), 403, "forbidden")
        _assert_error(await http.get("/api/portfolio/acct-nobody", headers=bearer(ALICE)), 403, "forbidden")
        # the API key is for services, not a way into a person's account
        _assert_error(await http.get(path, headers={"X-API-Key": API_KEY}), 401, "unauthorized")
        assert (await http.get(f"/api/portfolio/{BOB_ACCOUNT}", headers=bearer(BOB))).status_code == 200


async def test_portfolio_without_snapshot_is_404(env) -> None:
    settings, store = env
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        _assert_error(await http.get(f"/api/portfolio/{ALICE_ACCOUNT}", headers=bearer(ALICE)), 404, "not_found")


async def test_company_profile_with_latest_price(env, redis_url: str) -> None:
    settings, store = env
    store.upsert_company_profiles([
        CompanyProfile(symbol="AAPL", company_name="Apple Inc.", industry="Computer Hardware", isin="US0378331005",
                       country="United States", facts={"founded": "1976"}, source="pytickersymbols"),
        CompanyProfile(symbol="IBM", company_name="International Business Machines"),
        CompanyProfile(symbol="META", company_name="Meta Platforms"),
    ])
    price = LastPrice(symbol="AAPL", last=580.0, prev_close=560.0, ts=time.time(), session="2012-06-01",
                      source="replay")
    fb = LastPrice(symbol="FB", last=27.5, prev_close=25.0, ts=time.time(), session="2012-06-01", source="replay")
    redis.Redis.from_url(redis_url).mset(
        {"price:AAPL": json_encoder.encode(price), "price:FB": json_encoder.encode(fb)}
    )
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        for headers in ({"X-API-Key": API_KEY}, bearer(BOB)):
            response = await http.get("/api/company/aapl", headers=headers)
            assert response.status_code == 200
            body = response.json()
            assert body["symbol"] == "AAPL" and body["profile"]["company_name"] == "Apple Inc."
            assert body["profile"]["isin"] == "US0378331005" and body["profile"]["facts"] == {"founded": "1976"}
            assert body["price"]["last"] == 580.0 and body["price"]["source"] == "replay"
            assert body["price"]["change"] == pytest.approx(20.0)
            assert body["price"]["change_pct"] == pytest.approx(20 / 560 * 100, abs=1e-4)
            assert body["price"]["live"] is False
            assert (body["live"], body["stale"], body["quote"]) == (False, False, None)  # no FMP key: stored only
        no_price = (await http.get("/api/company/IBM", headers={"X-API-Key": API_KEY})).json()
        assert no_price["profile"]["company_name"].startswith("International") and no_price["price"] is None
        meta = (await http.get("/api/company/META", headers={"X-API-Key": API_KEY})).json()
        assert meta["price"]["symbol"] == "FB" and meta["price"]["last"] == 27.5  # the price data's alias
        _assert_error(await http.get("/api/company/ZZZZ", headers={"X-API-Key": API_KEY}), 404, "not_found")
        _assert_error(await http.get("/api/company/A$PL", headers={"X-API-Key": API_KEY}), 422, "invalid_request")
        _assert_error(await http.get("/api/company/AAPL"), 401, "unauthorized")
        wrong = _assert_error(await http.get("/api/company/AAPL", headers={"X-API-Key": "nope"}), 401, "unauthorized")
        assert wrong["message"] == "invalid API key"


async def test_shared_helpers_for_mounted_routes(env) -> None:
    settings, store = env
    port = free_port()
    async with running_gateway(settings, store, port, [*CORE_PROVIDERS, _test_routes]) as gw, \
            httpx.AsyncClient(base_url=gw.http) as http:
        key = {"X-API-Key": API_KEY}
        missing = _assert_error(await http.post("/test/echo", json={"account_id": "a", "amount": "1"}), 401,
                                "unauthorized")
        assert missing["message"] == "API key missing"
        _assert_error(await http.post("/test/echo", headers={"X-API-Key": ""}, json={}), 401, "unauthorized")
        _assert_error(await http.post("/test/echo", headers=key, content=b'{"account_id": '), 400, "bad_request")
        _assert_error(await http.post("/test/echo", headers=key, content=b""), 400, "bad_request")
        bad = _assert_error(await http.post("/test/echo", headers=key, json={"account_id": "a", "amount": "ten"}),
                            422, "invalid_request")
        assert bad["details"]["path"] == "$.amount"
        negative = _assert_error(await http.post("/test/echo", headers=key, json={"account_id": "a", "amount": "-1"}),
                                 422, "invalid_request")
        assert "positive" in negative["details"]["reason"]
        missing_field = _assert_error(await http.post("/test/echo", headers=key, json={"amount": "1"}), 422,
                                      "invalid_request")
        assert "account_id" in missing_field["details"]["reason"]
        _assert_error(await http.post("/test/echo", headers=key, json=[1, 2]), 422, "invalid_request")
        ok = await http.post("/test/echo", headers=key, json={"account_id": "a", "amount": "10.05"})
        assert ok.status_code == 201 and ok.json() == {"account_id": "a", "amount": "20.10", "user": "service"}

        assert (await http.get(f"/test/owned/{ALICE_ACCOUNT}", headers=bearer(ALICE))).json() == {"user": ALICE}
        _assert_error(await http.get(f"/test/owned/{ALICE_ACCOUNT}", headers=bearer(BOB)), 403, "forbidden")

        _assert_error(await http.get("/test/raise/conflict"), 409, "conflict")
        _assert_error(await http.get("/test/raise/missing"), 404, "not_found")
        rejected = _assert_error(await http.get("/test/raise/rejected"), 422, "rejected")
        assert rejected["details"] == {"needed": "10.00"}
        _assert_error(await http.get("/test/raise/down"), 503, "unavailable")
        bug = await http.get("/test/raise/bug")
        _assert_error(bug, 500, "internal_error")
        assert "hunter2" not in bug.text and "RuntimeError" not in bug.text
        _assert_error(await http.get("/no/such/route"), 404, "not_found")
        _assert_error(await http.delete("/api/health"), 405, "method_not_allowed")


async def test_openapi_lists_every_route_with_msgspec_schemas(env) -> None:
    settings, store = env
    async with running_gateway(settings, store, free_port(), [*CORE_PROVIDERS, _test_routes]) as gw, \
            httpx.AsyncClient(base_url=gw.http) as http:
        doc = (await http.get("/openapi.json")).json()
        app_paths = {route.path for route in gw.app.routes}
        assert app_paths <= set(doc["paths"])
        assert {"/ws/portfolio/{account_id}", "/api/company/{ticker}", "/test/echo"} <= set(doc["paths"])
        schemas = doc["components"]["schemas"]
        assert {"PortfolioSnapshot", "ErrorResponse", "EchoBody", "CompanyResponse"} <= set(schemas)
        echo = doc["paths"]["/test/echo"]["post"]
        assert echo["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EchoBody"}
        assert {"400", "401", "422"} <= set(echo["responses"])
        portfolio = doc["paths"]["/api/portfolio/{account_id}"]["get"]
        assert portfolio["security"] == [{"BearerJWT": []}] and {"403", "404"} <= set(portfolio["responses"])
        # a Decimal is read from a plain decimal string (as it is sent) or a JSON number
        amount = schemas["EchoBody"]["properties"]["amount"]["anyOf"]
        assert amount == [{"type": "string", "pattern": DECIMAL_PATTERN}, {"type": "number"}]
