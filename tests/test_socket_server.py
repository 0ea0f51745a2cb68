"""The replica's own WebSocket server (gateway/socket_server.py): real uvicorn serving the ASGI app, the
native server it starts on its own port, real Redis pub/sub and a real `websockets` client."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pytest
import redis
import websockets
from conftest import free_port
from gateway_support import (
    ALICE,
    ALICE_ACCOUNT,
    BOB,
    BOB_ACCOUNT,
    decode,
    make_settings,
    make_store,
    publish,
    running_gateway,
    snapshot,
    token,
)
from test_gateway_ws import close_code, next_of, recovers_from_a_dropped_subscription, until_seq
from websockets.asyncio.client import connect

from gateway.hub import PortfolioHub
from gateway.services import Services
from gateway.socket_server import SocketServer


@pytest.fixture
def env(redis_url: str, tmp_path: Path):
    return make_settings(redis_url, tmp_path, CLERA_WS_PORT=str(free_port())), make_store(tmp_path / "store.db")


def native_gateway(settings, store):
    return running_gateway(settings, store, free_port(), socket_server=True)


async def test_frames_are_byte_identical_to_the_asgi_routes(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=4, total=1234567.891, n_positions=3))
    query = f"/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
    async with (
        native_gateway(settings, store) as gw,
        connect(gw.ws + query) as asgi,
        connect(gw.native + query) as native,
    ):
        first = await asyncio.wait_for(native.recv(decode=False), 10)
        assert first == await asyncio.wait_for(asgi.recv(decode=False), 10)
        assert decode(first)["seq"] == 4 and decode(first)["total_value"] == "$1,234,567.89"
        await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=5, total=-42.5, change=-3.1))
        live = await asyncio.wait_for(native.recv(decode=False), 10)
        assert live == await asyncio.wait_for(asgi.recv(decode=False), 10)
        assert decode(live)["today_return"].startswith("-$3.10")


async def test_snapshot_on_connect_then_live_updates_in_seq_order_on_one_subscription(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    plain = redis.Redis.from_url(redis_url)
    query = f"/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
    async with native_gateway(settings, store) as gw, connect(gw.native + query) as ws:
        assert (await next_of(ws))["seq"] == 1
        async with connect(gw.ws + query) as asgi:
            assert (await next_of(asgi))["seq"] == 1
            # the native server and the ASGI route share the replica's one subscription
            assert plain.pubsub_numsub(f"portfolio:{ALICE_ACCOUNT}") == [(f"portfolio:{ALICE_ACCOUNT}".encode(), 1)]
        for seq in range(2, 31):
            await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=seq, total=10_000 + seq))
        seen = await until_seq(ws, 30)
        assert seen == sorted(set(seen)) and seen[-1] == 30
        await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=5), snapshot(ALICE_ACCOUNT, seq=31, total=777.0))
        latest = await next_of(ws)
        assert latest["seq"] == 31 and latest["raw_value"] == 777.0  # the stale seq 5 was never sent


async def test_a_bearer_header_is_accepted(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(BOB_ACCOUNT, seq=7))
    async with (
        native_gateway(settings, store) as gw,
        connect(f"{gw.native}/ws/portfolio/{BOB_ACCOUNT}", additional_headers={"Authorization": f"Bearer {token(BOB)}"})
        as ws,
    ):
        assert (await next_of(ws))["seq"] == 7


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no_token", "bearer token missing"),
        ("bad_token", "invalid token"),
        ("expired", "token expired"),
        ("bad_scheme", "Authorization header must be 'Bearer <token>'"),
        ("someone_else", "you have no account with this id"),
        ("unknown_account", "you have no account with this id"),
    ],
)
async def test_policy_violations_close_with_1008_and_a_reason(env, case: str, reason: str) -> None:
    settings, store = env
    account, query, headers = ALICE_ACCOUNT, f"?token={token(ALICE)}", {}
    if case == "no_token":
        query = ""
    elif case == "bad_token":
        query = "?token=abc.def.ghi"
    elif case == "expired":
        query = f"?token={token(ALICE, ttl_s=-1)}"
    elif case == "bad_scheme":
        headers = {"Authorization": f"Basic {token(ALICE)}"}
    elif case == "someone_else":
        account = BOB_ACCOUNT
    else:
        account = "acct-nobody"
    async with native_gateway(settings, store) as gw, connect(
        f"{gw.native}/ws/portfolio/{account}{query}", additional_headers=headers
    ) as ws:
        assert await close_code(ws) == 1008
        assert ws.close_reason == reason


async def test_heartbeat_and_malformed_frames(env) -> None:
    settings, store = env
    async with (
        native_gateway(settings, store) as gw,
        connect(f"{gw.native}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws,
    ):
        await ws.send(json.dumps({"type": "heartbeat"}))
        assert (await next_of(ws, "heartbeat_ack"))["timestamp"]
        for bad in ("not json", b"\x00\x01binary", json.dumps({"type": "dance"}), json.dumps([1]), "{}"):
            await ws.send(bad)
            error = await next_of(ws, "error")
            assert error["error"]["code"] == "bad_request" and error["error"]["message"]
        await ws.send(json.dumps({"type": "pong"}))  # answered by nothing
        await ws.send(json.dumps({"type": "heartbeat"}))
        assert decode(await asyncio.wait_for(ws.recv(), 10))["type"] == "heartbeat_ack"


async def test_server_pings_and_drops_silent_peers(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        redis_url, tmp_path, HEARTBEAT_INTERVAL="0.5", CONNECTION_TIMEOUT="3.0", CLERA_WS_PORT=str(free_port())
    )
    async with native_gateway(settings, make_store(tmp_path / "store.db")) as gw:
        url = f"{gw.native}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
        async with connect(url) as quiet, connect(url) as chatty:
            assert (await next_of(quiet, "ping"))["timestamp"]

            async def keep_talking() -> None:
                while True:
                    await chatty.send(json.dumps({"type": "pong"}))
                    await asyncio.sleep(0.1)

            talker = asyncio.create_task(keep_talking())
            try:
                assert await close_code(quiet) == 1001
                assert quiet.close_reason == "connection timeout"
                await chatty.send(json.dumps({"type": "heartbeat"}))
                assert (await next_of(chatty, "heartbeat_ack"))["type"] == "heartbeat_ack"
            finally:
                talker.cancel()


async def test_plain_http_gets_the_api_error_shape(env) -> None:
    settings, store = env
    async with (
        native_gateway(settings, store) as gw,
        httpx.AsyncClient(base_url=gw.native.replace("ws://", "http://")) as http,
    ):
        wrong = await http.get("/api/health")
        assert wrong.status_code == 404 and wrong.headers["content-type"] == "application/json"
        assert wrong.json() == {"error": {"code": "not_found", "message": "Not Found", "details": None}}
        plain = await http.get(f"/ws/portfolio/{ALICE_ACCOUNT}")
        assert plain.status_code == 426 and plain.headers["upgrade"] == "websocket"
        assert plain.json()["error"]["code"] == "upgrade_required"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(f"{gw.native}/ws/nowhere/{ALICE_ACCOUNT}?token={token(ALICE)}")
        assert refused.value.response.status_code == 404


async def test_slow_consumer_gets_the_latest_not_a_backlog_and_blocks_nobody(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1, n_positions=800))
    async with native_gateway(settings, store) as gw:
        url = f"{gw.native}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
        port = gw.app.state.socket_server.port
        # a small, fixed receive buffer and no client-side queue: a phone on a poor network
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        raw.connect(("127.0.0.1", port))
        async with connect(url, sock=raw, max_queue=1, compression=None) as slow, connect(url) as fast:
            assert (await next_of(fast))["seq"] == 1
            last = 201
            for seq in range(2, last + 1):  # ~25 MB of snapshots, far more than the socket buffers hold
                await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=seq, n_positions=800))
            fast_seen = await until_seq(fast, last)  # arrives while `slow` has read nothing
            assert fast_seen[-1] == last
            slow_seen = await until_seq(slow, last)
            assert slow_seen[-1] == last and slow_seen == sorted(set(slow_seen))
            assert len(slow_seen) < last - 1  # it skipped states instead of replaying a backlog


async def test_a_dropped_redis_subscription_is_reestablished_and_sockets_stay_open(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    async with (
        native_gateway(settings, store) as gw,
        connect(f"{gw.native}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws,
    ):
        await recovers_from_a_dropped_subscription(ws, redis_url)


async def test_shutdown_closes_native_sockets_with_1001(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    async with native_gateway(settings, store) as gw:
        ws = await connect(f"{gw.native}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}")
        assert (await next_of(ws))["seq"] == 1
    assert await close_code(ws) == 1001


async def test_internal_failure_closes_with_1011(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.hub

    monkeypatch.setattr(gateway.hub, "JOIN_TIMEOUT_S", 0.3)
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0", tmp_path, CLERA_WS_PORT=str(free_port()))
    async with (
        native_gateway(settings, make_store(tmp_path / "store.db")) as gw,
        connect(f"{gw.native}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws,
    ):
        assert await close_code(ws) == 1011
        assert ws.close_reason == "internal error"


async def test_each_replica_takes_the_next_free_port_of_the_range(env) -> None:
    settings, store = env
    assert settings.redis_url is not None
    services = Services.in_process(settings, settings.redis_url, store)
    hub = PortfolioHub(services)
    first, second = SocketServer(hub, services), SocketServer(hub, services)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        base = taken.getsockname()[1]
        try:
            assert await first.start("127.0.0.1", base, ports=20) > base
            assert await second.start("127.0.0.1", base, ports=20) > first.port
        finally:
            await first.close()
            await second.close()
            await hub.close()
            await services.aclose()
