"""The gateway as a real local Ray Serve deployment: 2 replicas, REST and WebSocket through Serve's
proxy and straight to a replica's own port (direct ingress, as `clera serve` runs it).

One deployment for the whole module (starting Serve costs seconds); the engine topology is not
started here (its own tests cover it), so snapshots are published into Redis as the shards do.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import psutil
import pytest
import redis
import websockets
import yaml
from conftest import DIRECT_PORT, REDIS_URL, WS_PORT, free_port
from gateway_support import (
    ALICE,
    ALICE_ACCOUNT,
    API_KEY,
    BOB,
    JWT_SECRET,
    bearer,
    decode,
    make_store,
    publish,
    snapshot,
    token,
)
from test_gateway_ws import close_code, next_of, until_seq
from websockets.asyncio.client import ClientConnection, connect

from engine.config import Settings, load_settings

APP_NAME = "clera-gateway-test"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    from ray import serve

    import serve_app

    environ = {
        "REDIS_URL": REDIS_URL,
        "CLERA_DATA_DIR": str(tmp_path_factory.mktemp("serve-data")),
        "BACKEND_API_KEY": API_KEY,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "CLERA_SERVE_MIN_REPLICAS": "2",
        "CLERA_SERVE_MAX_REPLICAS": "2",
        "CLERA_REPLAY_EPOCH": repr(time.time()),
        "CLERA_DIRECT_PORT": str(DIRECT_PORT),
        "CLERA_WS_PORT": str(WS_PORT),
    }
    settings = load_settings(environ, env_file=None)
    make_store(settings.sqlite_path)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(serve_app.gateway_app(settings, start_engine=False), name=APP_NAME, route_prefix="/")
    try:
        yield f"127.0.0.1:{port}", settings
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()


def _replica_names(deployment: str = "Gateway") -> list[str]:
    import ray

    return sorted(
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#{deployment}#")
    )


async def test_rest_through_serve(served, redis_url: str) -> None:
    host, settings = served
    snap = snapshot(ALICE_ACCOUNT, seq=3, total=5000.0)
    await publish(redis_url, snap)
    async with httpx.AsyncClient(base_url=f"http://{host}") as http:
        health = (await http.get("/api/health")).json()
        # no engine in this test: the replica says so instead of claiming health
        assert health["engine"]["state"] == "down" and health["status"] == "degraded"
        assert health["engine"]["shards_expected"] == settings.symbol_shards + settings.portfolio_shards
        assert health["redis_reachable"] is True
        response = await http.get(f"/api/portfolio/{ALICE_ACCOUNT}", headers=bearer(ALICE))
        assert response.status_code == 200 and response.json()["seq"] == 3
        assert response.json()["total_value"] == 5000.0
        denied = await http.get(f"/api/portfolio/{ALICE_ACCOUNT}", headers=bearer(BOB))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        missing = await http.get("/no/such/route")
        assert missing.status_code == 404 and set(missing.json()["error"]) == {"code", "message", "details"}
        company = await http.get("/api/company/AAPL", headers={"X-API-Key": API_KEY})
        assert (
            company.status_code == 200 and company.json()["profile"]["company_name"] == "Apple Inc."
        )  # loaded on start
        doc = (await http.get("/openapi.json")).json()
        assert "/ws/portfolio/{account_id}" in doc["paths"] and "/api/portfolio/{account_id}" in doc["paths"]


async def test_chat_through_the_agent_deployment(served, redis_url: str) -> None:
    """The gateway replica calls the AgentGraph deployment: a turn, a stream, and the runner's typed
    refusals answering with their own status through the handle."""
    from paper_support import set_price

    host, _ = served
    set_price(redis_url, "AAPL", 572.16, 568.75)
    headers = {"X-API-Key": API_KEY, **bearer(ALICE)}
    async with httpx.AsyncClient(base_url=f"http://{host}", timeout=60) as http:
        response = await http.post("/api/chat", json={"message": "price of AAPL?", "accountId": ALICE_ACCOUNT},
                                   headers=headers)
        assert response.status_code == 200, response.text
        turn = response.json()
        assert turn["agent"] == "financial_analyst" and turn["steps"][0]["result"]["price"] == "572.16"
        async with http.stream("POST", "/api/chat/stream", headers=headers, json={
            "message": "and Apple's price now?", "accountId": ALICE_ACCOUNT, "threadId": turn["threadId"],
        }) as stream:
            body = (await stream.aread()).decode()
        assert stream.status_code == 200 and "event: token" in body and body.rstrip().split("\n\n")[-1].startswith(
            "event: done")
        listed = await http.get("/api/chat/threads", params={"accountId": ALICE_ACCOUNT}, headers=headers)
        assert [t["threadId"] for t in listed.json()["threads"]] == [turn["threadId"]]
        refused = await http.post("/api/chat/resume", headers={"X-API-Key": API_KEY, **bearer(BOB)}, json={
            "threadId": turn["threadId"], "interruptId": "x", "decision": "confirm"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        idle = await http.post("/api/chat/resume", headers=headers, json={
            "threadId": turn["threadId"], "interruptId": "x", "decision": "confirm"})
        assert idle.status_code == 409 and idle.json()["error"]["code"] == "not_waiting"


async def test_account_closure_through_serve(served, redis_url: str) -> None:
    """The gateway replica runs closure calls as Ray tasks: their typed errors come back as the documented
    status and shape, under both prefixes, and ownership is checked before any task runs."""
    host, _ = served
    headers = {"X-API-Key": API_KEY, **bearer(ALICE)}
    async with httpx.AsyncClient(base_url=f"http://{host}", timeout=60) as http:
        for prefix in ("/account-closure", "/api/account-closure"):
            missing = await http.get(f"{prefix}/progress/{ALICE_ACCOUNT}", headers=headers)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "closure_not_found", missing.text
        denied = await http.get(f"/api/account-closure/check-readiness/{ALICE_ACCOUNT}",
                                headers={"X-API-Key": API_KEY, **bearer(BOB)})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        refused = await http.post(f"/api/account-closure/initiate/{ALICE_ACCOUNT}", headers=headers,
                                  json={"ach_relationship_id": "x", "confirm_liquidation": True})
        assert refused.status_code == 422


async def test_websocket_through_serve(served, redis_url: str) -> None:
    host, _ = served
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    async with connect(f"ws://{host}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws:
        first = await next_of(ws)
        assert first["seq"] == 1 and first["total_value"] == "$10,000.00"
        await ws.send(json.dumps({"type": "heartbeat"}))
        assert (await next_of(ws, "heartbeat_ack"))["timestamp"]
        for seq in range(2, 12):
            await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=seq))
        seen = await until_seq(ws, 11)
        assert seen == sorted(set(seen)) and seen[-1] == 11
    for query in ("", "?token=garbage", f"?token={token(ALICE, ttl_s=-1)}"):
        async with connect(f"ws://{host}/ws/portfolio/{ALICE_ACCOUNT}{query}") as ws:
            assert await close_code(ws) == 1008
    async with connect(f"ws://{host}/ws/portfolio/{ALICE_ACCOUNT}?token={token(BOB)}") as ws:
        assert await close_code(ws) == 1008


def _direct_ports() -> list[int]:
    """The replicas' own ports: those of the configured range that answer Serve's replica route list."""
    found = []
    for port in range(DIRECT_PORT, DIRECT_PORT + 100):
        try:
            routes = httpx.get(f"http://127.0.0.1:{port}/-/routes", timeout=1.0)
        except httpx.HTTPError:
            continue
        if routes.status_code == 200 and APP_NAME in routes.text:
            found.append(port)
    return found


async def test_websocket_straight_to_each_replica(served, redis_url: str) -> None:
    ports = _direct_ports()
    assert len(ports) == 2  # one per replica, from CLERA_DIRECT_PORT on
    for seq, port in enumerate(ports, start=1):
        await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=seq * 10))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get(f"/api/portfolio/{ALICE_ACCOUNT}", headers=bearer(ALICE))
            assert response.status_code == 200 and response.json()["seq"] == seq * 10
        async with connect(f"ws://127.0.0.1:{port}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws:
            assert (await next_of(ws))["seq"] == seq * 10
            await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=seq * 10 + 1))
            assert (await next_of(ws))["seq"] == seq * 10 + 1
            await ws.send("not json")
            assert (await next_of(ws, "error"))["error"]["code"] == "bad_request"
        async with connect(f"ws://127.0.0.1:{port}/ws/portfolio/{ALICE_ACCOUNT}?token={token(BOB)}") as ws:
            assert await close_code(ws) == 1008


async def test_each_replica_serves_sockets_from_its_own_websocket_server(served, redis_url: str) -> None:
    """CLERA_NATIVE_WS: every replica binds the next free port from CLERA_WS_PORT, shares its hub with
    the ASGI route and answers as it does."""
    _, settings = served
    listening = {c.laddr.port for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    ports = [p for p in range(WS_PORT, WS_PORT + 101) if p in listening]
    assert len(ports) == 2 and ports[0] == settings.ws_port  # one per replica, the first one first
    assert all(_listener(p) for p in ports)  # each served by a replica of this application
    for seq, port in enumerate(ports, start=1):
        await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=100 + seq * 10))
        async with connect(f"ws://127.0.0.1:{port}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws:
            assert (await next_of(ws))["seq"] == 100 + seq * 10
            await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=100 + seq * 10 + 1))
            assert (await next_of(ws))["seq"] == 100 + seq * 10 + 1
        async with connect(f"ws://127.0.0.1:{port}/ws/portfolio/{ALICE_ACCOUNT}?token={token(BOB)}") as ws:
            assert await close_code(ws) == 1008


def _listener(port: int) -> psutil.Process:
    """The process serving a replica's own port: the replica itself, for this test's application."""
    pids = {
        c.pid for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid is not None
    }
    assert len(pids) == 1, f"one process listens on {port}: {pids}"
    process = psutil.Process(pids.pop())
    assert process.name().startswith(f"ray::ServeReplica:{APP_NAME}:Gateway"), process.name()
    return process


async def _closed_without_news(ws: ClientConnection, last_seq: int) -> None:
    """The socket ends (its replica is gone) and nothing newer than `last_seq` reached it first."""
    with pytest.raises(websockets.ConnectionClosed):  # noqa: PT012 - read until the replica's end closes it
        while True:
            frame = decode(await asyncio.wait_for(ws.recv(), timeout=30))
            assert frame["type"] != "portfolio_update" or frame["seq"] <= last_seq


async def _connect_through_proxy(url: str) -> tuple[ClientConnection, dict]:
    """A client reconnecting through Serve's proxy: refused or cut handshakes (the proxy may still pick
    the dead replica for a moment) are retried until one connection delivers its first snapshot."""
    deadline = time.monotonic() + 120
    while True:
        try:
            ws = await connect(url, open_timeout=10)
        except (TimeoutError, OSError, websockets.InvalidHandshake):
            ws = None
        if ws is not None:
            try:
                return ws, await next_of(ws)
            except (TimeoutError, websockets.ConnectionClosed):
                await ws.close()
        assert time.monotonic() < deadline, "no live replica took the socket"
        await asyncio.sleep(0.5)


async def test_two_replicas_serve_one_account_and_clients_reconnect_after_a_replica_dies(
    served, redis_url: str
) -> None:
    host, settings = served
    ports = _direct_ports()
    assert len(ports) == 2 and len(_replica_names()) == 2
    # an account of this test alone: pub/sub channels are shared by every database of the server
    account = f"acct-two-replicas-{uuid.uuid4().hex[:8]}"
    make_store(settings.sqlite_path).add_account(ALICE, account, status="active")

    def url(where: str) -> str:
        return f"ws://{where}/ws/portfolio/{account}?token={token(ALICE)}"

    await publish(redis_url, snapshot(account, seq=1))
    # three sockets straight to each replica's own port, so both replicas verifiably hold sockets
    victim_port, survivor_port = ports
    victims = [await connect(url(f"127.0.0.1:{victim_port}")) for _ in range(3)]
    survivors = [await connect(url(f"127.0.0.1:{survivor_port}")) for _ in range(3)]
    for ws in victims + survivors:
        assert (await next_of(ws))["seq"] == 1
    plain = redis.Redis.from_url(redis_url)
    # one subscription per replica, however many sockets it holds
    assert plain.pubsub_numsub(f"portfolio:{account}")[0][1] == 2
    await publish(redis_url, snapshot(account, seq=2))
    for ws in victims + survivors:
        assert (await next_of(ws))["seq"] == 2

    _listener(victim_port).kill()  # the replica process dies, with its three sockets
    for ws in victims:
        await _closed_without_news(ws, last_seq=2)
    await publish(redis_url, snapshot(account, seq=3))
    for ws in survivors:  # undisturbed: the next frame is the next state, on the same connection
        assert (await next_of(ws))["seq"] == 3

    # the dead replica's clients come back through the proxy and resume where the account is
    reconnected = [await _connect_through_proxy(url(host)) for _ in victims]
    for _, first in reconnected:
        assert first["seq"] == 3
    for seq in (4, 5):
        await publish(redis_url, snapshot(account, seq=seq))
        for ws in [ws for ws, _ in reconnected] + survivors:
            assert (await next_of(ws))["seq"] == seq
    for ws in [ws for ws, _ in reconnected] + survivors:
        await ws.close()
    plain.close()


def test_outside_clera_serve_an_external_redis_is_required(tmp_path) -> None:
    import serve_app
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        serve_app.require_external_redis(load_settings({"CLERA_DATA_DIR": str(tmp_path)}, env_file=None))


def test_replicas_agree_on_one_replay_epoch(redis_url: str) -> None:
    import serve_app

    unset = load_settings({"REDIS_URL": redis_url}, env_file=None)
    first = serve_app.shared_replay_epoch(unset, redis_url)
    time.sleep(0.01)
    second = serve_app.shared_replay_epoch(unset, redis_url)
    assert first.replay_epoch is not None and first.replay_epoch == second.replay_epoch
    rebuilt = load_settings(serve_app.settings_environ(first), env_file=None)
    assert rebuilt == first  # what a broker task rebuilds from the environment it is given


def test_deployment_is_sized_for_sockets() -> None:
    import serve_app

    settings = load_settings({"CLERA_SERVE_MAX_ONGOING": "7000", "CLERA_SERVE_TARGET_ONGOING": "1500",
                              "CLERA_SERVE_MAX_REPLICAS": "3"}, env_file=None)
    options = serve_app.deployment_options(settings)
    assert options["max_ongoing_requests"] == 7000
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 1500}


def test_serve_config_names_the_application_of_this_repository() -> None:
    """What `serve deploy serve_config.yaml` imports exists and is a Serve application (the config
    itself runs under `serve run` in tests/test_entry_points.py)."""
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    assert [app.name for app in config.applications] == ["clera"]
    for app in config.applications:
        module, _, attribute = app.import_path.partition(":")
        target = getattr(importlib.import_module(module), attribute)
        assert isinstance(target, serve.Application), f"{app.import_path} is a {type(target).__name__}"
        # a runtime_env variable would beat the nodes' environment and .env on every replica: the file sets none
        env_vars = (app.runtime_env or {}).get("env_vars", {})
        assert not {field.encode_name for field in msgspec.structs.fields(Settings)} & set(env_vars), env_vars
