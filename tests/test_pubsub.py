"""Redis I/O of the realtime path against the machine's real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from realtime_support import unique

from engine import pubsub, redis_keys
from engine.columns import encode_columns
from engine.realtime import PortfolioCore, publish_step, refresh_interest, restore_from_redis
from engine.types import AccountHoldings, LastPrice, PortfolioSnapshot, Position, Tick, snapshot_json_decoder

# channels are server-wide: ids unique to this run (see realtime_support.RUN)
A, B, ACC, ZZZ, P1, P2 = (unique(n) for n in ("a", "b", "acc", "zzz", "p1", "p2"))
W, Q, CASH = unique("w"), unique("q"), unique("cash-only")
DROPPED = unique("dropped")


def _snap(account: str, seq: int, total: float, ts: float = 1.0) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        account_id=account, seq=seq, as_of=ts, ingest_ts=ts, publish_ts=ts + seq, total_value=total,
        cash=total, positions_value=0.0, day_change=0.0, day_change_pct=0.0, positions=[],
    )


async def _numsub(client: aioredis.Redis, channel: str) -> int:
    return dict(await client.pubsub_numsub(channel))[channel.encode()]


async def _eventually(predicate, what: str, tries: int = 200) -> None:
    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_publish_snapshots_publishes_live_and_stores_last(redis_url) -> None:
    client = pubsub.connect(redis_url)
    watcher = client.pubsub(ignore_subscribe_messages=True)
    await watcher.subscribe(f"portfolio:{A}", f"portfolio:{B}")
    sent = await pubsub.publish_snapshots(client, [_snap(A, 1, 10.0)], [_snap(B, 1, 20.0)])
    assert sent == 2
    message = None
    while message is None:
        message = await watcher.get_message(timeout=1.0)
    assert message["channel"] == f"portfolio:{A}".encode()
    assert snapshot_json_decoder.decode(message["data"]).total_value == 10.0
    # "b" is not watched live, only stored: the next message on the subscription is a marker sent
    # after the publish (a published snapshot of "b" would have arrived before it)
    await client.publish(f"portfolio:{B}", b"marker")
    message = None
    while message is None:
        message = await watcher.get_message(timeout=1.0)
    assert (message["channel"], message["data"]) == (f"portfolio:{B}".encode(), b"marker")
    last = await pubsub.read_last_snapshots(client, [A, B, "nobody"])
    assert {k: v.total_value for k, v in last.items()} == {A: 10.0, B: 20.0}
    await watcher.aclose()
    await client.aclose()


async def test_prices_and_interest_keys(redis_url) -> None:
    client = pubsub.connect(redis_url)
    await pubsub.write_prices(client, [LastPrice("IBM", 190.5, 189.0, 5.0, "2012-06-01", "replay")])
    await client.set("price:BAD", b"{not json")
    prices = await pubsub.read_prices(client, ["IBM", "BAD", "NONE"])
    assert list(prices) == ["IBM"] and prices["IBM"].last == 190.5 and prices["IBM"].source == "replay"
    await pubsub.register_interest(client, ["x", "y"], ttl_s=5)
    assert await pubsub.interested(client, ["x", "z", "y"]) == [True, False, True]
    assert 0 < await client.pttl("interest:x") <= 5000
    await client.aclose()


async def test_subscriber_shares_one_channel_and_keeps_latest(redis_url) -> None:
    writer = pubsub.connect(redis_url)
    await pubsub.publish_snapshots(writer, [], [_snap(ACC, 3, 99.0)])
    hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=20)
    await hub.start()
    first = await hub.listen(ACC)
    second = await hub.listen(ACC)
    other = await hub.listen(ZZZ)
    assert (await first.get(timeout=2)).seq == 3  # the last snapshot comes first
    assert await writer.exists(f"interest:{ACC}") == 1
    assert await _numsub(writer, f"portfolio:{ACC}") == 1  # one Redis subscription for both listeners
    for seq in range(4, 9):
        await pubsub.publish_snapshots(writer, [_snap(ACC, seq, 100.0 + seq)], [])

    async def second_has_latest() -> bool:
        got = second.latest()
        return got is not None and got.seq == 8
    await _eventually(second_has_latest, "the last of five snapshots reached the listener")
    got = await first.get(timeout=2)
    assert (got.seq, got.total_value) == (8, 108.0)  # a slow reader gets the latest, not a backlog
    assert first.skipped >= 1
    # a stale snapshot (an older seq published earlier) never replaces a newer one
    first.offer(_snap(ACC, 2, 1.0, ts=-10))
    assert first.latest().seq == 8
    await writer.publish(f"portfolio:{ACC}", b"garbage")
    await _eventually(lambda: _async(hub.malformed == 1), "malformed message counted")
    await first.close()
    assert await _numsub(writer, f"portfolio:{ACC}") == 1
    await second.close()
    await _eventually(lambda: _numsub_is(writer, f"portfolio:{ACC}", 0), "unsubscribed after the last listener")
    assert other.latest() is None
    await other.close()
    await hub.close()
    await writer.aclose()


async def test_subscriber_resubscribes_after_redis_drops_its_connection(redis_url) -> None:
    """Redis closes a subscriber that falls behind (output buffer limit); here it is killed outright."""
    writer = pubsub.connect(redis_url)
    db = writer.connection_pool.connection_kwargs.get("db", 0)

    async def subscribers() -> set[int]:
        return {c["id"] for c in await writer.client_list(_type="pubsub") if int(c["db"]) == db}

    others = await subscribers()
    hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=20)
    await hub.start()
    listener = await hub.listen(DROPPED)
    mine = await subscribers() - others
    assert mine and all([await writer.client_kill_filter(_id=c) == 1 for c in mine])
    assert await _numsub(writer, f"portfolio:{DROPPED}") == 0
    await _eventually(lambda: _numsub_is(writer, f"portfolio:{DROPPED}", 1), "the channel subscribed again", 500)
    await pubsub.publish_snapshots(writer, [_snap(DROPPED, 1, 7.0)], [])
    assert (await listener.get(timeout=5)).total_value == 7.0  # live again
    await listener.close()
    await hub.close()
    await writer.aclose()


async def _drain(watcher, quiet_s: float = 0.3) -> list[dict]:
    """Messages until none arrives for `quiet_s` (subscribe confirmations are skipped)."""
    out, loop = [], asyncio.get_running_loop()
    deadline = loop.time() + quiet_s
    while loop.time() < deadline:
        m = await watcher.get_message(timeout=0.05)
        if m is not None:
            out.append(m)
            deadline = loop.time() + quiet_s
    return out


async def _async(value):
    return value


async def _numsub_is(client, channel, n) -> bool:
    return await _numsub(client, channel) == n


async def test_pattern_subscriber(redis_url) -> None:
    writer = pubsub.connect(redis_url)
    hub = pubsub.PortfolioSubscriber(redis_url, pattern=True)
    await hub.start()
    async with await hub.listen(P1) as listener:
        await asyncio.sleep(0.05)
        await pubsub.publish_snapshots(writer, [_snap(P1, 1, 5.0), _snap(P2, 1, 6.0)], [])
        got = await listener.get(timeout=2)
        assert (got.account_id, got.total_value) == (P1, 5.0)
    assert hub.channels() == set()
    await hub.close()
    await writer.aclose()


async def test_holdings_changes_skips_malformed(redis_url) -> None:
    # the channel is server-wide (pub/sub ignores the db): other processes may announce on it too
    client = pubsub.connect(redis_url)
    subscribed = asyncio.Event()
    changes = pubsub.holdings_changes(client, subscribed)
    mine = [f"h-{uuid.uuid4().hex}", f"h-{uuid.uuid4().hex}"]

    async def until_mine() -> list[list[str]]:
        seen = []
        async for ids in changes:
            seen.append(ids)
            if ids == mine:
                return seen

    task = asyncio.ensure_future(until_mine())
    await asyncio.wait_for(subscribed.wait(), 5)
    await client.publish(redis_keys.HOLDINGS_CHANNEL, b"not json")
    await client.publish(redis_keys.HOLDINGS_CHANNEL, b'{"not": "a list"}')
    await pubsub.announce_holdings_changed(client, mine)
    seen = await asyncio.wait_for(task, 5)
    assert seen[-1] == mine and all(isinstance(i, list) and all(isinstance(a, str) for a in i) for i in seen)
    await changes.aclose()
    await client.aclose()


async def test_portfolio_core_publishes_watched_accounts_and_resumes_seq(redis_url) -> None:
    client = pubsub.connect(redis_url)
    holdings = [
        AccountHoldings(W, Decimal("10.00"), [Position("IBM", Decimal(2), Decimal(2))], session="2012-06-01"),
        AccountHoldings(Q, Decimal("5.00"), [Position("IBM", Decimal(1), Decimal(1))], session="2012-06-01"),
        AccountHoldings(CASH, Decimal("7.25")),
    ]
    core = PortfolioCore(0, 1, publish_hz=100.0, idle_refresh_s=0.05)
    core.set_holdings(holdings)
    await pubsub.register_interest(client, [W], 10)
    await refresh_interest(core, client)
    watcher = client.pubsub(ignore_subscribe_messages=True)
    await watcher.subscribe(f"portfolio:{W}", f"portfolio:{Q}", f"portfolio:{CASH}")
    core.on_batch(encode_columns([Tick("IBM", 190.0, 188.0, 100.0, "2012-06-01", "replay")], 100.5))
    for _ in range(30):
        await publish_step(core, client)
        await asyncio.sleep(0.05)
    seen = [snapshot_json_decoder.decode(m["data"]) for m in await _drain(watcher)]
    assert [(s.account_id, s.total_value, s.day_change) for s in seen] == [(W, 390.0, 4.0)]
    assert seen[0].as_of == 100.0 and seen[0].ingest_ts == 100.5 and seen[0].publish_ts >= 100.5
    last = await pubsub.read_last_snapshots(client, [W, Q, CASH])
    assert {k: v.total_value for k, v in last.items()} == {W: 390.0, Q: 195.0, CASH: 7.25}
    # a new core for the same accounts (a restarted shard) continues seq and takes prices from Redis
    await pubsub.write_prices(client, [LastPrice("IBM", 191.0, 188.0, 101.0, "2012-06-01", "replay")])
    again = PortfolioCore(0, 1, publish_hz=100.0, idle_refresh_s=0.05)
    again.set_holdings(holdings)
    await restore_from_redis(again, client)
    await refresh_interest(again, client)
    await publish_step(again, client)
    (snap,) = [snapshot_json_decoder.decode(m["data"]) for m in await _drain(watcher)]
    assert (snap.account_id, snap.seq, snap.total_value) == (W, seen[0].seq + 1, 392.0)
    await watcher.aclose()
    await client.aclose()


def _steps(core: PortfolioCore) -> list[PortfolioSnapshot]:
    """What two steps a second apart, past the start's price grace, store as last values."""
    now = time.time() + core.price_grace_s
    return core.step(now)[1] + core.step(now + 1.0)[1]


async def test_a_restart_ignores_prices_of_a_later_session_left_by_an_earlier_run(redis_url) -> None:
    """A new replay epoch starts again at an earlier moment: the previous run's prices must not move
    the book to their day (every tick of the new run would be dropped as stale) or ahead of it."""
    client = pubsub.connect(redis_url)
    holding = AccountHoldings(W, Decimal("0"), [Position("IBM", Decimal(2), Decimal(2))], session="2012-06-01")
    later_day = 1_347_634_800.0  # 2012-09-14 15:00 UTC, replayed market time
    await pubsub.write_prices(client, [LastPrice("IBM", 205.0, 200.0, later_day, "2012-09-14", "replay")])
    core = PortfolioCore(0, 1, publish_hz=100.0, idle_refresh_s=0.05)
    core.set_holdings([holding])
    await restore_from_redis(core, client, market_now=later_day - 100 * 86_400)  # in the new run's June
    core.on_batch(encode_columns([Tick("IBM", 190.0, 188.0, 100.0, "2012-06-01", "replay")], 100.5))
    quiet = _steps(core)
    assert [(s.total_value, s.day_change) for s in quiet] == [(380.0, 4.0)]
    assert core.book.stats.stale == 0 and core.book.session == "2012-06-01"
    # the same price is taken once the market has reached its day
    later = PortfolioCore(0, 1, publish_hz=100.0, idle_refresh_s=0.05)
    later.set_holdings([holding])
    await restore_from_redis(later, client, market_now=later_day)
    assert [s.total_value for s in _steps(later)] == [410.0]
    await client.aclose()


def test_bad_frames_are_counted() -> None:
    core = PortfolioCore(0, 1, 4.0, 10.0)
    assert core.on_batch(b"\xc1\x00") == 0 and core.on_batch("text") == 0
    assert core.stats.bad_frames == 2


@pytest.mark.parametrize("shards", [2, 3])
def test_accounts_are_split_across_shards(shards) -> None:
    ids = [f"acct-{i}" for i in range(50)]
    owners = [[i for i in range(shards) if PortfolioCore(i, shards, 4, 10).owns(a)] for a in ids]
    assert all(len(o) == 1 for o in owners) and len({o[0] for o in owners}) == shards


def test_console_table_reads_last_values_and_keeps_interest(redis_url) -> None:
    import redis
    from rich.console import Console

    from engine.console import portfolio_table, read_snapshots
    from engine.wire import json_encoder

    client = redis.Redis.from_url(redis_url)
    client.set("portfolio:last:c1", json_encoder.encode(_snap("c1", 4, 1234.5)))
    client.set("portfolio:last:c2", b"{broken")
    snaps = read_snapshots(client, ["c1", "c2", "c3"], interest_ttl_s=9)
    assert snaps["c1"].seq == 4 and snaps["c2"] is None and snaps["c3"] is None
    assert all(0 < client.pttl(f"interest:{a}") <= 9000 for a in ("c1", "c2", "c3"))
    out = Console(width=200, record=True, color_system=None)
    out.print(portfolio_table([("c1", "one"), ("c2", "two")], snaps))
    text = out.export_text()
    assert "$1,234.50" in text and "waiting" in text and "total" in text
    client.close()
