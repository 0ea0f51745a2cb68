"""Killed shards restart and rebuild their state; publishing resumes with correct values."""

from __future__ import annotations

import pytest
import ray
from realtime_support import assert_replay_values, engine_settings, eventually, replay_of, running_engine, unique

from engine import pubsub
from engine.subscriptions import shard_of

ACCOUNTS = [
    {
        "account_id": unique(f"r-{i}"),
        "cash": f"{100 * i}.50",
        "positions": [{"symbol": s, "qty": str(i + 1)} for s in syms],
    }
    for i, syms in enumerate([["AAPL", "MSFT"], ["IBM"], ["GOOG", "AAPL"], ["MSFT"]])
]


@pytest.mark.usefixtures("ray_session")
async def test_killed_portfolio_shard_restarts_and_resumes(redis_url, tmp_path) -> None:
    settings = engine_settings(redis_url, tmp_path, ACCOUNTS)
    feed = replay_of(settings)
    account = ACCOUNTS[0]
    hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=30)
    await hub.start()
    with running_engine(settings, redis_url) as topo:
        listener = await hub.listen(account["account_id"])
        before = await listener.get(timeout=30)
        assert_replay_values(before, account, feed)
        victim = topo.portfolio_shards[shard_of(account["account_id"], settings.portfolio_shards)]
        started = (await victim.status.remote())["started_at"]
        ray.kill(victim, no_restart=False)

        async def restarted() -> bool:
            try:
                status = await victim.status.remote()
            except ray.exceptions.RayError:
                return False
            return status["started_at"] != started and status["ready"]
        await eventually(restarted, "the shard came back", timeout=60)

        async def resumed() -> bool:
            snap = await listener.get(timeout=30)
            return snap.publish_ts > before.publish_ts + 0.5 and snap.as_of > before.as_of

        await eventually(resumed, "live snapshots after the restart", timeout=60)
        after = await listener.get(timeout=30)
        assert after.seq > before.seq  # seq continues from what was published, never restarts at 1
        assert_replay_values(after, account, feed)

        # a symbol shard too: it recovers its counts from the portfolio shards and the feed resubscribes
        symbol_shard = topo.symbol_shards[0]
        ray.kill(symbol_shard, no_restart=False)

        async def counts_back() -> bool:
            try:
                return await symbol_shard.symbols.remote() == ["AAPL", "GOOG", "IBM", "MSFT"]
            except ray.exceptions.RayError:
                return False
        await eventually(counts_back, "symbol counts rebuilt", timeout=60)
        mark = await listener.get(timeout=30)

        async def flowing() -> bool:
            snap = await listener.get(timeout=30)
            return snap.as_of > mark.as_of
        await eventually(flowing, "prices flow again after the symbol shard restart", timeout=60)
        assert_replay_values(await listener.get(timeout=30), account, feed)
        await listener.close()
    await hub.close()
