"""End to end: replay feed -> MarketFeed -> SymbolShard -> PortfolioShard -> Redis -> a subscriber."""

from __future__ import annotations

import asyncio

import pytest
import ray
from realtime_support import (
    engine_settings,
    eventually,
    replay_of,
    replay_prices,
    running_engine,
    unique,
    write_accounts,
)

from actors.common import market_feed_name, portfolio_shard_name, position_sync_name, symbol_shard_name
from actors.topology import health, start_topology
from engine import pubsub

A, B, C = unique("e2e-a"), unique("e2e-b"), unique("e2e-c")

WATCHED = {"account_id": A, "cash": "1000.00", "positions": [
    {"symbol": "AAPL", "qty": "10"}, {"symbol": "IBM", "qty": "5"}]}
QUIET = {"account_id": B, "cash": "50.00", "positions": [{"symbol": "MSFT", "qty": "100"}]}
EMPTY = {"account_id": C, "cash": "300.00", "positions": []}


def _check_values(snap, qty: dict[str, float], cash: float, feed) -> None:
    want = replay_prices(feed, snap)
    assert {p.symbol for p in snap.positions} == set(qty)
    for p in snap.positions:
        last, prev = want[p.symbol]
        assert p.last_price == pytest.approx(last, rel=1e-9) and p.prev_close == pytest.approx(prev, rel=1e-12)
        assert p.qty == qty[p.symbol]
    total = cash + sum(qty[s] * want[s][0] for s in qty)
    change = sum(qty[s] * (want[s][0] - want[s][1]) for s in qty)
    assert snap.total_value == pytest.approx(total, abs=0.006)
    assert snap.day_change == pytest.approx(change, abs=0.006)
    assert snap.source == "replay" and snap.publish_ts >= snap.ingest_ts


@pytest.mark.usefixtures("ray_session")
async def test_feed_to_redis_in_order_with_correct_values(redis_url, tmp_path) -> None:
    settings = engine_settings(redis_url, tmp_path, [WATCHED, QUIET, EMPTY])
    feed = replay_of(settings)
    client = pubsub.connect(redis_url)
    await pubsub.register_interest(client, [A], 60)
    raw = client.pubsub(ignore_subscribe_messages=True)
    await raw.subscribe(f"portfolio:{A}", f"portfolio:{B}", f"portfolio:{C}")
    with running_engine(settings, redis_url):
        seen = []
        while len(seen) < 12:
            message = await raw.get_message(timeout=5.0)
            if message is not None:
                seen.append(pubsub.snapshot_json_decoder.decode(message["data"]))
        # only the watched account is published live, in seq order, each with the replay's prices
        assert {s.account_id for s in seen} == {A}
        seqs = [s.seq for s in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for snap in seen:
            _check_values(snap, {"AAPL": 10.0, "IBM": 5.0}, 1000.0, feed)
        assert len({s.total_value for s in seen}) > 1  # prices move along the replayed day
        # the others: last value kept current without being published
        async def quiet_stored() -> bool:
            last = await pubsub.read_last_snapshots(client, [B, C])
            return len(last) == 2 and last[B].positions != []
        await eventually(quiet_stored, "portfolio:last of unwatched accounts")
        last = await pubsub.read_last_snapshots(client, [B, C])
        _check_values(last[B], {"MSFT": 100.0}, 50.0, feed)
        assert (last[C].total_value, last[C].day_change, last[C].positions) == (300.0, 0.0, [])
        prices = await pubsub.read_prices(client, ["AAPL", "IBM", "MSFT"])
        assert set(prices) == {"AAPL", "IBM", "MSFT"} and {p.source for p in prices.values()} == {"replay"}
    await raw.aclose()
    await client.aclose()


@pytest.mark.usefixtures("ray_session")
async def test_position_changes_move_subscriptions(redis_url, tmp_path) -> None:
    settings = engine_settings(redis_url, tmp_path, [WATCHED, QUIET])
    feed = replay_of(settings)
    client = pubsub.connect(redis_url)
    hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=30)
    await hub.start()
    with running_engine(settings, redis_url) as topo:
        shard = topo.symbol_shards[0]
        assert await shard.symbols.remote() == ["AAPL", "IBM", "MSFT"]
        assert (await topo.market_feed.status.remote())["feed"]["subscribed"] == 3
        listener = await hub.listen(A)
        first = await listener.get(timeout=30)
        # sell all IBM, buy GOOG: IBM's count reaches zero and the feed stops it; GOOG starts
        changed = dict(WATCHED, positions=[{"symbol": "AAPL", "qty": "10"}, {"symbol": "GOOG", "qty": "2"}])
        write_accounts(tmp_path / "accounts.json", [changed, QUIET])
        await pubsub.announce_holdings_changed(client, [A])

        async def moved() -> bool:
            return await shard.symbols.remote() == ["AAPL", "GOOG", "MSFT"]
        await eventually(moved, "symbol counts follow the holdings")

        # the feed stops sending IBM: once GOOG flows, no tick arrives for a symbol nobody holds
        async def goog_priced() -> bool:
            return "GOOG" in await pubsub.read_prices(client, ["GOOG"])
        await eventually(goog_priced, "GOOG ticks flow")
        unrouted = (await shard.status.remote())["stats"]["unrouted"]
        mark = (await pubsub.read_prices(client, ["AAPL"]))["AAPL"].ts

        async def ticks_later() -> bool:
            return (await pubsub.read_prices(client, ["AAPL"]))["AAPL"].ts > mark
        await eventually(ticks_later, "more replay steps")
        assert (await shard.status.remote())["stats"]["unrouted"] == unrouted
        assert (await topo.market_feed.status.remote())["feed"]["subscribed"] == 3

        async def has_goog() -> bool:
            snap = await listener.get(timeout=30)
            return {p.symbol for p in snap.positions} == {"AAPL", "GOOG"}
        await eventually(has_goog, "snapshot with the new holdings")
        snap = await listener.get(timeout=30)
        assert snap.seq > first.seq
        _check_values(snap, {"AAPL": 10.0, "GOOG": 2.0}, 1000.0, feed)
        # the account closes: it disappears from its shard, and MSFT alone remains with AAPL gone too
        write_accounts(tmp_path / "accounts.json", [QUIET])
        await pubsub.announce_holdings_changed(client, [A])

        async def only_msft() -> bool:
            return await shard.symbols.remote() == ["MSFT"]
        await eventually(only_msft, "a closed account's symbols are released")

        async def feed_has_one() -> bool:
            return (await topo.market_feed.status.remote())["feed"]["subscribed"] == 1
        await eventually(feed_has_one, "the feed follows the counts down to MSFT alone")
        owners = await asyncio.gather(*(p.accounts.remote() for p in topo.portfolio_shards))
        assert sorted(a for group in owners for a in group) == [B]
        await listener.close()
    await hub.close()
    await client.aclose()


@pytest.mark.usefixtures("ray_session")
async def test_topology_is_get_or_create_and_reports_health(redis_url, tmp_path) -> None:
    settings = engine_settings(redis_url, tmp_path, [WATCHED])

    def named_actors() -> set[str]:
        return {
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == settings.ray_namespace
        }

    engine = {market_feed_name(), position_sync_name(), *(symbol_shard_name(i) for i in range(settings.symbol_shards)),
              *(portfolio_shard_name(j) for j in range(settings.portfolio_shards))}
    with running_engine(settings, redis_url) as topo:
        again = start_topology(settings, redis_url)
        assert again.market_feed._actor_id == topo.market_feed._actor_id
        assert [s._actor_id for s in again.portfolio_shards] == [s._actor_id for s in topo.portfolio_shards]
        assert named_actors() == engine
        report = await health(settings)
        assert report["ok"] and report["feed"]["feed"]["source"] == "replay"
        assert all(s["alive"] for s in report["symbol_shards"] + report["portfolio_shards"])
    assert named_actors() == set()  # stopping the engine leaves none of its named actors behind
