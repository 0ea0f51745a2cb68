"""Malformed frames, unknown symbols and NaN/negative prices are rejected and counted; nothing crashes."""

from __future__ import annotations

import pytest
from realtime_support import engine_settings, eventually, replay_of, replay_prices, running_engine, unique

from engine import pubsub
from engine.columns import encode_columns
from engine.symbol_core import SymbolCore
from engine.types import Tick

ACCOUNT = {
    "account_id": unique("bad-a"),
    "cash": "10.00",
    "positions": [{"symbol": "AAPL", "qty": "3"}, {"symbol": "ZZZZ", "qty": "4", "avg_entry_price": "5.00"}],
}


def _bad_ticks(session: str) -> list[Tick]:
    return [
        Tick("AAPL", float("nan"), 570.0, 1.0, session, "replay"),
        Tick("AAPL", -1.0, 570.0, 1.0, session, "replay"),
        Tick("AAPL", 571.0, float("inf"), 1.0, session, "replay"),
    ]


def test_symbol_core_counts_each_kind_of_bad_input() -> None:
    core = SymbolCore()
    core.set_holder(0, ["AAPL"])
    assert core.route(b"\x93\x01") == {} and core.route(None) == {}
    out = core.route(
        encode_columns([*_bad_ticks("2012-06-01"), Tick("NOPE", 1.0, 1.0, 1.0, "2012-06-01", "replay")], 1.0)
    )
    assert out == {}
    assert (core.stats.bad_frames, core.stats.rejected, core.stats.unrouted) == (2, 3, 1)
    assert core.take_prices() == []  # nothing bad reached price:{SYMBOL}


@pytest.mark.usefixtures("ray_session")
async def test_shards_reject_bad_input_and_keep_publishing(redis_url, tmp_path) -> None:
    settings = engine_settings(redis_url, tmp_path, [ACCOUNT], CLERA_PORTFOLIO_SHARDS="1")
    feed = replay_of(settings)
    hub = pubsub.PortfolioSubscriber(redis_url)
    await hub.start()
    with running_engine(settings, redis_url) as topo:
        listener = await hub.listen(ACCOUNT["account_id"])
        first = await listener.get(timeout=30)
        symbol_shard, portfolio_shard = topo.symbol_shards[0], topo.portfolio_shards[0]
        # the replay does not know ZZZZ: reported, and valued at its entry price meanwhile
        assert (await portfolio_shard.status.remote())["unknown_symbols"] == ["ZZZZ"]
        zzzz = next(p for p in first.positions if p.symbol == "ZZZZ")
        assert (zzzz.last_price, zzzz.market_value, zzzz.day_change) == (5.0, 20.0, 0.0)

        await symbol_shard.on_ticks.remote(b"\xc1garbage")
        await symbol_shard.on_ticks.remote("not bytes")
        await portfolio_shard.on_batch.remote(b"\x92\xa1x")
        bad = [*_bad_ticks(first.session), Tick("NOPE", 3.0, 3.0, 1.0, first.session, "replay")]
        await symbol_shard.on_ticks.remote(encode_columns(bad, 0.0))  # well-formed, but no tick in it is good

        async def counted() -> bool:
            stats = (await symbol_shard.status.remote())["stats"]
            return stats["rejected"] >= 3 and stats["unrouted"] >= 1
        await eventually(counted, "bad ticks counted by the symbol shard")
        stats = (await symbol_shard.status.remote())["stats"]
        assert stats["bad_frames"] == 2 and stats["rejected"] == 3
        assert (await portfolio_shard.status.remote())["stats"]["bad_frames"] == 1

        async def fresh() -> bool:
            snap = await listener.get(timeout=30)
            return snap.as_of > first.as_of
        await eventually(fresh, "publishing goes on")
        snap = await listener.get(timeout=30)
        aapl = next(p for p in snap.positions if p.symbol == "AAPL")
        last, prev = replay_prices(feed, snap)["AAPL"]
        assert aapl.last_price == pytest.approx(last, rel=1e-9) and aapl.prev_close == pytest.approx(prev)
        assert snap.total_value == pytest.approx(10.0 + 3 * last + 20.0, abs=0.006)
        await listener.close()
    await hub.close()
