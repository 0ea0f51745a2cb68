"""The gateway as a real local Ray Serve deployment: 2 replicas, REST and WebSocket through Serve's
proxy and straight to a replica's own port (direct ingress, as `clera serve` runs it).

One deployment for the whole module (starting Serve costs seconds); the engine topology is not
started here (its own tests cover it), so snapshots are published into Redis as the shards do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from websockets.asyncio.client import connect

from conftest import DIRECT_PORT, REDIS_URL, free_port
from engine.config import Settings, load_settings
from gateway_support import (
    ALICE,
    ALICE_ACCOUNT,
    API_KEY,
    BOB,
    JWT_SECRET,
    bearer,
    make_store,
    publish,
    snapshot,
    token,
)
from test_gateway_ws import close_code, next_of, until_seq

APP_NAME = "clera-gateway-test"


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
    }
    settings = load_settings(environ, env_file=None)
    make_store(settings.sqlite_path)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(serve_app.gateway_app(settings, environ, start_engine=False), name=APP_NAME, route_prefix="/")
    try:
        yield f"127.0.0.1:{port}", settings
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()


def _replica_names() -> list[str]:
    import ray

    return sorted(
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::") and APP_NAME in a["name"]
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
        assert company.status_code == 200 and company.json()["profile"]["name"] == "Apple Inc."  # loaded on start
        doc = (await http.get("/openapi.json")).json()
        assert "/ws/portfolio/{account_id}" in doc["paths"] and "/api/portfolio/{account_id}" in doc["paths"]


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


async def test_two_replicas_serve_one_account_and_clients_reconnect_after_a_replica_dies(
    served, redis_url: str
) -> None:
    import ray

    host, _ = served
    assert len(_replica_names()) == 2
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    url = f"ws://{host}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
    sockets = [await connect(url) for _ in range(6)]
    for ws in sockets:
        assert (await next_of(ws))["seq"] == 1
    # one subscription per replica, however many sockets it holds
    numsub = redis.Redis.from_url(redis_url).pubsub_numsub(f"portfolio:{ALICE_ACCOUNT}")[0][1]
    assert 1 <= numsub <= 2
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=2))
    for ws in sockets:
        assert (await next_of(ws))["seq"] == 2

    ray.kill(ray.get_actor(_replica_names()[0], namespace="serve"), no_restart=True)
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=3))
    survivors = 0
    for ws in sockets:
        try:
            assert (await next_of(ws))["seq"] == 3
            survivors += 1
        except Exception:  # this socket was on the killed replica: the client reconnects
            pass
        await ws.close()
    assert survivors < 6 or numsub == 1
    for attempt in range(60):  # Serve routes new sockets to a live replica (and replaces the dead one)
        try:
            async with connect(url) as again:
                assert (await next_of(again))["seq"] == 3
                await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=4))
                assert (await next_of(again))["seq"] == 4
                break
        except Exception:  # refused, closed or not yet routed: back off and retry
            if attempt == 59:
                raise
            await asyncio.sleep(0.5 * min(2 ** attempt, 4))


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
