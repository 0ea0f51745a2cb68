"""The Alpaca feed through the real alpaca-py client against a local stand-in of Alpaca's market data."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from zoneinfo import ZoneInfo

import msgpack
import pytest
from standins.alpaca_stream import AlpacaStreamStandIn

from engine import calendar
from engine.config import load_settings
from engine.feeds import feed_from_settings
from engine.feeds.alpaca import AlpacaFeed
from engine.types import Tick

NEW_YORK = ZoneInfo("America/New_York")
pytestmark = pytest.mark.asyncio(loop_scope="session")  # the async fixture and the tests share one loop


def session_of(ts: float) -> dt.date:
    """Alpaca trades belong to their New York calendar day (extended hours included)."""
    day = dt.datetime.fromtimestamp(ts, NEW_YORK).date()
    return day if calendar.is_trading_day(day) else calendar.next_trading_day(day)


@pytest.fixture
def server() -> Iterator[AlpacaStreamStandIn]:
    with AlpacaStreamStandIn() as stand_in:
        today = session_of(time.time())
        stand_in.set_snapshot("AAPL", 190.25, today, daily_close=191.0)
        stand_in.set_snapshot("MSFT", 410.5, today)
        yield stand_in


def make_feed(server: AlpacaStreamStandIn, key: str | None = None, data_timeout: float | None = 30.0) -> AlpacaFeed:
    return AlpacaFeed(key or server.key, server.secret, stream_url=server.stream_url, data_url=server.data_url,
                      data_timeout=data_timeout)


@pytest.fixture
async def feed(server: AlpacaStreamStandIn) -> AsyncIterator[AlpacaFeed]:
    live = make_feed(server)
    yield live
    await live.close()
    assert not live.running


async def until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def collect(batches: AsyncIterator[list[Tick]], n: int) -> list[Tick]:
    ticks: list[Tick] = []
    while len(ticks) < n:
        ticks.extend(await asyncio.wait_for(anext(batches), 15))
    return ticks


async def test_trades_arrive_as_ticks_with_the_previous_close(server: AlpacaStreamStandIn, feed: AlpacaFeed) -> None:
    assert await asyncio.to_thread(feed.subscribe, ["AAPL", "MSFT", "NOPE"]) == ["NOPE"]  # no snapshot: unknown
    assert server.snapshot_requests == [["AAPL", "MSFT", "NOPE"]]
    await until(lambda: server.subscribed == {"AAPL", "MSFT"})
    batches = aiter(feed.batches())
    now = time.time()
    server.push_trades({"S": "AAPL", "p": 191.5, "s": 10, "t": now}, {"S": "MSFT", "p": 409.0, "t": now + 0.5})
    ticks = await collect(batches, 2)
    session = session_of(now).isoformat()
    assert [(t.symbol, t.price, t.prev_close, t.session, t.source, t.size) for t in ticks] == [
        ("AAPL", 191.5, 190.25, session, "alpaca", 10.0),
        ("MSFT", 409.0, 410.5, session, "alpaca", 100.0),
    ]
    assert ticks[0].ts == pytest.approx(now, abs=1e-6)
    status = feed.status()
    assert (status.connected, status.authenticated, status.subscribed, status.ticks, status.rejected) == (
        True, True, 2, 2, 1)


async def test_bad_frames_and_trades_are_rejected_and_counted(server: AlpacaStreamStandIn, feed: AlpacaFeed) -> None:
    await asyncio.to_thread(feed.subscribe, ["AAPL"])
    await until(lambda: server.subscribed == {"AAPL"})
    batches = aiter(feed.batches())
    server.push_trades(
        {"S": "AAPL", "p": float("nan")},
        {"S": "AAPL", "p": float("inf")},
        {"S": "AAPL", "p": -3.0},
        {"S": "AAPL", "p": 0},
        {"S": "AAPL", "p": "191.0"},
        {"S": "AAPL", "p": 191.0, "t": "2026-01-02T15:00:00Z"},  # a string time (msgpack wants a Timestamp)
        {"S": "AAPL", "p": 191.0, "s": -5},
        {"S": "MSFT", "p": 410.0},  # never subscribed
        {"S": ["AAPL"], "p": 191.0},
    )
    server.push_raw(msgpack.packb([{"T": "t", "p": 191.0}]))  # a trade without a symbol
    server.push_raw(b"\xc1 not msgpack")
    server.push_raw(msgpack.packb({"T": "t", "S": "AAPL"}))  # not an array of messages
    server.push_raw("a text frame")
    server.push_trades({"S": "AAPL", "p": 192.0})
    ticks = await collect(batches, 1)
    assert [(t.symbol, t.price) for t in ticks] == [("AAPL", 192.0)]
    status = feed.status()
    assert status.rejected == 13 and status.ticks == 1
    assert server.connections == 1 and status.reconnects == 0  # bad data never cost the connection


async def test_auth_failure_is_reported_and_not_retried(server: AlpacaStreamStandIn) -> None:
    bad = make_feed(server, key="wrong-key")
    try:
        assert await asyncio.to_thread(bad.subscribe, ["AAPL"]) == []  # the REST refusal alone can't tell
        # the REST refusal (401) is reported, unless the stream's own refusal (402) already replaced it
        assert not bad.status().authenticated and any(c in (bad.status().error or "") for c in ("401", "402"))
        await until(lambda: "402" in (bad.status().error or ""))
        await until(lambda: not bad.running)  # the stream stopped itself
        status = bad.status()
        assert not status.authenticated and not status.connected and "auth failed" in (status.error or "")
        assert server.auth_attempts == 1 and server.connections == 1
    finally:
        await bad.close()


async def test_a_dropped_connection_reconnects_and_resubscribes(server: AlpacaStreamStandIn, feed: AlpacaFeed) -> None:
    await asyncio.to_thread(feed.subscribe, ["AAPL", "MSFT"])
    await until(lambda: server.subscribed == {"AAPL", "MSFT"})
    batches = aiter(feed.batches())
    server.push_trades({"S": "AAPL", "p": 191.0})
    await collect(batches, 1)
    server.drop()
    await until(lambda: server.connections == 2 and server.subscribed == {"AAPL", "MSFT"})
    await until(lambda: feed.status().connected)
    assert feed.status().reconnects == 1
    server.push_trades({"S": "MSFT", "p": 411.0})
    ticks = await collect(batches, 1)
    assert [(t.symbol, t.price, t.prev_close) for t in ticks] == [("MSFT", 411.0, 410.5)]


async def test_a_silent_stream_is_reconnected_by_the_watchdog(server: AlpacaStreamStandIn) -> None:
    quiet = make_feed(server, data_timeout=1.0)
    try:
        await asyncio.to_thread(quiet.subscribe, ["AAPL"])
        await until(lambda: server.subscribed == {"AAPL"})
        batches = aiter(quiet.batches())
        server.push_trades({"S": "AAPL", "p": 191.0})
        await collect(batches, 1)
        # From here on the server keeps the socket open (and answers pings) but sends nothing.
        await until(lambda: server.connections >= 2 and server.subscribed == {"AAPL"})
        await until(lambda: quiet.status().reconnects >= 1)
        server.push_trades({"S": "AAPL", "p": 193.0})
        assert [t.price for t in await collect(batches, 1)] == [193.0]
    finally:
        await quiet.close()


async def test_unsubscribe_reaches_the_server(server: AlpacaStreamStandIn, feed: AlpacaFeed) -> None:
    await asyncio.to_thread(feed.subscribe, ["AAPL", "MSFT"])
    await until(lambda: server.subscribed == {"AAPL", "MSFT"})
    await asyncio.to_thread(feed.unsubscribe, ["AAPL"])
    await until(lambda: server.subscribed == {"MSFT"})
    assert server.actions[-1] == {"action": "unsubscribe", "trades": ["AAPL"]}
    assert feed.status().subscribed == 1
    batches = aiter(feed.batches())
    server.push_trades({"S": "AAPL", "p": 191.0}, {"S": "MSFT", "p": 412.0})
    assert [t.symbol for t in await collect(batches, 1)] == ["MSFT"]
    assert feed.status().rejected == 1  # the late AAPL trade
    server.drop()  # a reconnect must not bring AAPL back
    await until(lambda: server.connections == 2 and server.subscribed == {"MSFT"})


async def test_a_new_trading_day_fetches_its_previous_close(server: AlpacaStreamStandIn, feed: AlpacaFeed) -> None:
    await asyncio.to_thread(feed.subscribe, ["AAPL"])
    await until(lambda: server.subscribed == {"AAPL"})
    batches = aiter(feed.batches())
    later = calendar.add_trading_days(session_of(time.time()), 2)
    server.set_snapshot("AAPL", 201.0, later)
    stamp = calendar.session_bounds(later)[0].timestamp() + 60
    server.push_trades({"S": "AAPL", "p": 202.0, "t": stamp})
    ticks = await collect(batches, 1)
    assert [(t.price, t.prev_close, t.session) for t in ticks] == [(202.0, 201.0, later.isoformat())]
    assert server.snapshot_requests == [["AAPL"], ["AAPL"]]
    after_hours = calendar.session_bounds(later)[1].timestamp() + 2 * 3600  # still that New York day
    server.push_trades({"S": "AAPL", "p": 203.0, "t": after_hours})
    ticks = await collect(batches, 1)
    assert [(t.price, t.prev_close, t.session) for t in ticks] == [(203.0, 201.0, later.isoformat())]
    assert len(server.snapshot_requests) == 2  # same day: no new request


async def test_settings_build_the_alpaca_feed(server: AlpacaStreamStandIn) -> None:
    settings = load_settings({
        "CLERA_FEED": "alpaca", "BROKER_API_KEY": server.key, "BROKER_SECRET_KEY": server.secret,
        "CLERA_ALPACA_STREAM_URL": server.stream_url, "CLERA_ALPACA_DATA_URL": server.data_url,
        "CLERA_ALPACA_DATA_TIMEOUT_S": "5",
    }, env_file=None)
    from engine.clock import WallClock

    live = feed_from_settings(settings, WallClock())
    try:
        assert isinstance(live, AlpacaFeed)
        assert await asyncio.to_thread(live.subscribe, ["MSFT"]) == []
        assert (server.snapshot_auth[-1] or "").startswith("Basic ")  # broker keys use Basic auth
        await until(lambda: server.subscribed == {"MSFT"})
        batches = aiter(live.batches())
        server.push_trades({"S": "MSFT", "p": 400.0})
        assert [(t.price, t.prev_close) for t in await collect(batches, 1)] == [(400.0, 410.5)]
    finally:
        await live.close()
