"""The portfolio WebSocket through real uvicorn servers, real Redis pub/sub and a real `websockets` client."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import socket
import time
from pathlib import Path

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
    unsigned_token,
    wrong_audience_token,
)
from websockets.asyncio.client import ClientConnection, connect

from engine.types import PortfolioSnapshot
from gateway.frames import iso_time, money, signed_return


@pytest.fixture
def env(redis_url: str, tmp_path: Path):
    return make_settings(redis_url, tmp_path), make_store(tmp_path / "store.db")


async def next_of(ws: ClientConnection, kind: str = "portfolio_update") -> dict:
    """The next frame of one type, skipping server pings."""
    while True:
        frame = decode(await asyncio.wait_for(ws.recv(), timeout=10))
        if frame["type"] == kind:
            return frame


async def until_seq(ws: ClientConnection, seq: int) -> list[int]:
    seen: list[int] = []
    while not seen or seen[-1] < seq:
        seen.append((await next_of(ws))["seq"])
    return seen


async def close_code(ws: ClientConnection) -> int:
    with pytest.raises(websockets.ConnectionClosed) as closed:  # noqa: PT012 - read until the server closes
        while True:
            await asyncio.wait_for(ws.recv(), timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def test_legacy_money_formats() -> None:
    assert money(1234567.891) == "$1,234,567.89"
    assert money(-0.5) == "-$0.50"
    assert signed_return(12.3, 0.45) == "+$12.30 (0.45%)"
    assert signed_return(-1234.5, -1.2345) == "-$1,234.50 (-1.23%)"
    assert signed_return(0.0, 0.0) == "+$0.00 (0.00%)"


def test_frame_timestamps_are_what_datetime_writes() -> None:
    """The frames' `timestamp` is formatted from a per-second cache: the same text as datetime's
    isoformat, including microseconds rounded half to even and none shown when they are zero."""
    rng = random.Random(5)
    stamps = [0.0, 1.0, 1796335635.0, 1796335635.9999995, 1796335635.0000005, 1796335635.0000015, -0.0000004]
    stamps += [rng.uniform(0, 4e9) for _ in range(20_000)]
    stamps += [rng.randrange(4 * 10**9) + (rng.randrange(2 * 10**6) + 1) / 2e6 for _ in range(20_000)]  # ties
    for ts in stamps:
        assert iso_time(ts) == dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(), ts


async def test_snapshot_on_connect_with_legacy_fields_and_interest(env, redis_url: str) -> None:
    settings, store = env
    now = time.time()
    snap = PortfolioSnapshot(
        account_id=ALICE_ACCOUNT, seq=4, as_of=now, ingest_ts=now, publish_ts=now, total_value=1234567.891,
        cash=1000.0, positions_value=1233567.891, day_change=12.3, day_change_pct=0.45, positions=[],
        session="2012-06-01", source="replay",
    )
    await publish(redis_url, snap)
    async with (
        running_gateway(settings, store, free_port()) as gw,
        connect(f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws,
    ):
        frame = await next_of(ws)
        assert frame["account_id"] == ALICE_ACCOUNT and frame["seq"] == 4
        assert frame["total_value"] == "$1,234,567.89"
        assert frame["today_return"] == "+$12.30 (0.45%)"
        assert (frame["raw_value"], frame["raw_return"], frame["raw_return_percent"]) == (1234567.891, 12.3, 0.45)
        assert frame["timestamp"].startswith(time.strftime("%Y-", time.gmtime(now)))
        assert frame["snapshot"]["cash"] == 1000.0 and frame["snapshot"]["session"] == "2012-06-01"
        ttl_ms = redis.Redis.from_url(redis_url).pttl(f"interest:{ALICE_ACCOUNT}")
        assert 0 < ttl_ms <= settings.interest_ttl_s * 1000


async def test_updates_arrive_with_increasing_seq_and_stale_ones_are_dropped(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    async with (
        running_gateway(settings, store, free_port()) as gw,
        connect(f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws,
    ):
        assert (await next_of(ws))["seq"] == 1
        for seq in range(2, 31):
            await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=seq, total=10_000 + seq))
        seen = await until_seq(ws, 30)
        assert seen == sorted(set(seen)) and seen[-1] == 30
        redis.Redis.from_url(redis_url).publish(f"portfolio:{ALICE_ACCOUNT}", b"{not a snapshot")  # skipped
        await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=5), snapshot(ALICE_ACCOUNT, seq=31, total=777.0))
        latest = await next_of(ws)
        assert latest["seq"] == 31 and latest["raw_value"] == 777.0


async def test_heartbeat_and_malformed_frames(env) -> None:
    settings, store = env
    async with (
        running_gateway(settings, store, free_port()) as gw,
        connect(f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws,
    ):
        await ws.send(json.dumps({"type": "heartbeat"}))
        ack = await next_of(ws, "heartbeat_ack")
        assert ack["timestamp"]
        for bad in ("not json", b"\x00\x01binary", json.dumps({"type": "dance"}), json.dumps([1]), "{}"):
            await ws.send(bad)
            error = await next_of(ws, "error")
            assert error["error"]["code"] == "bad_request" and error["error"]["message"]
        await ws.send(json.dumps({"type": "heartbeat"}))
        assert (await next_of(ws, "heartbeat_ack"))["type"] == "heartbeat_ack"


async def test_server_pings_and_drops_silent_peers(redis_url: str, tmp_path: Path) -> None:
    # the chatty peer speaks every 0.1 s: a 3 s timeout leaves room for a loaded machine's stalls
    settings = make_settings(redis_url, tmp_path, HEARTBEAT_INTERVAL="0.5", CONNECTION_TIMEOUT="3.0")
    store = make_store(tmp_path / "store.db")
    async with running_gateway(settings, store, free_port()) as gw:
        url = f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
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
                assert (await next_of(chatty, "heartbeat_ack"))["type"] == "heartbeat_ack"  # still served
            finally:
                talker.cancel()


@pytest.mark.parametrize(
    "case",
    [
        "no_token",
        "bad_token",
        "expired",
        "wrong_secret",
        "alg_none",
        "wrong_audience",
        "someone_else",
        "unknown_account",
    ],
)
async def test_policy_violations_close_with_1008(env, case: str) -> None:
    settings, store = env
    account, query = ALICE_ACCOUNT, f"?token={token(ALICE)}"
    if case == "no_token":
        query = ""
    elif case == "bad_token":
        query = "?token=abc.def.ghi"
    elif case == "expired":
        query = f"?token={token(ALICE, ttl_s=-1)}"
    elif case == "wrong_secret":
        query = f"?token={token(ALICE, secret='s' * 40)}"
    elif case == "alg_none":
        query = f"?token={unsigned_token(ALICE)}"
    elif case == "wrong_audience":
        query = f"?token={wrong_audience_token(ALICE)}"
    elif case == "someone_else":
        account = BOB_ACCOUNT
    else:
        account = "acct-nobody"
    async with (
        running_gateway(settings, store, free_port()) as gw,
        connect(f"{gw.ws}/ws/portfolio/{account}{query}") as ws,
    ):
        assert await close_code(ws) == 1008


async def test_reconnect_after_gateway_restart(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(BOB_ACCOUNT, seq=10))
    async with running_gateway(settings, store, free_port()) as gw:
        url = f"{gw.ws}/ws/portfolio/{BOB_ACCOUNT}?token={token(BOB)}"
        ws = await connect(url)
        assert (await next_of(ws))["seq"] == 10
        await gw.restart()
        with pytest.raises(websockets.ConnectionClosed):
            await until_seq(ws, 10_000)
        async with connect(url) as again:
            assert (await next_of(again))["seq"] == 10
            await publish(redis_url, snapshot(BOB_ACCOUNT, seq=11))
            assert (await next_of(again))["seq"] == 11


async def test_two_replicas_serve_the_same_account_with_one_subscription_each(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    plain = redis.Redis.from_url(redis_url)
    async with (
        running_gateway(settings, store, free_port()) as one,
        running_gateway(settings, store, free_port()) as two,
    ):
        query = f"/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
        sockets = [await connect(one.ws + query) for _ in range(3)] + [await connect(two.ws + query) for _ in range(2)]
        try:
            for ws in sockets:
                assert (await next_of(ws))["seq"] == 1
            assert plain.pubsub_numsub(f"portfolio:{ALICE_ACCOUNT}") == [(f"portfolio:{ALICE_ACCOUNT}".encode(), 2)]
            await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=2, total=4242.0))
            for ws in sockets:
                frame = await next_of(ws)
                assert frame["seq"] == 2 and frame["raw_value"] == 4242.0
        finally:
            for ws in sockets:
                await ws.close()
        # the last socket gone, each replica drops its subscription
        for _ in range(200):
            if plain.pubsub_numsub(f"portfolio:{ALICE_ACCOUNT}")[0][1] == 0:
                break
            await asyncio.sleep(0.05)
        assert plain.pubsub_numsub(f"portfolio:{ALICE_ACCOUNT}")[0][1] == 0


async def recovers_from_a_dropped_subscription(ws: ClientConnection, redis_url: str) -> None:
    """Alice's socket (her seq 1 stored) through its gateway's pub/sub connection being killed."""
    plain = redis.Redis.from_url(redis_url)
    assert (await next_of(ws))["seq"] == 1
    db = plain.connection_pool.connection_kwargs.get("db", 0)
    hubs = [c["id"] for c in plain.client_list(_type="pubsub") if int(c["db"]) == db]
    assert hubs and all(plain.client_kill_filter(_id=h) == 1 for h in hubs)
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=2))  # published while nobody listens
    assert (await next_of(ws))["seq"] == 2  # caught up from the last value after reconnecting
    for _ in range(200):
        if plain.pubsub_numsub(f"portfolio:{ALICE_ACCOUNT}")[0][1] == 1:
            break
        await asyncio.sleep(0.05)
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=3))
    assert (await next_of(ws))["seq"] == 3  # live again


async def test_a_dropped_redis_subscription_is_reestablished_and_sockets_stay_open(env, redis_url: str) -> None:
    """Redis closes a subscriber that falls behind (output buffer limit); here it is killed outright."""
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    async with (
        running_gateway(settings, store, free_port()) as gw,
        connect(f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws,
    ):
        await recovers_from_a_dropped_subscription(ws, redis_url)


async def test_slow_consumer_gets_the_latest_not_a_backlog_and_blocks_nobody(env, redis_url: str) -> None:
    settings, store = env
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1, n_positions=800))
    async with running_gateway(settings, store, free_port()) as gw:
        url = f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
        # A small, fixed receive buffer (no autotuning up to tens of MB) and no client-side queue:
        # what a phone on a poor network looks like to the server.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        raw.connect(("127.0.0.1", gw.port))
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


async def test_internal_failure_closes_with_1011(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.hub

    monkeypatch.setattr(gateway.hub, "JOIN_TIMEOUT_S", 0.3)
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0", tmp_path)  # nothing listens there
    async with (
        running_gateway(settings, make_store(tmp_path / "store.db"), free_port()) as gw,
        connect(f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}") as ws,
    ):
        assert await close_code(ws) == 1011
        assert ws.close_reason == "internal error"  # no internals in the reason
