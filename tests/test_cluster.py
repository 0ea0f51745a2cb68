"""The engine on a real multi-node Ray cluster (three raylets on this machine).

Run in its own pytest process (`pytest -m cluster`, which `make test` does): it starts its own
cluster, so it cannot share the session's single-node Ray. The head has no custom resource; two
workers offer `clera_realtime` and `clera_agents` as `cluster.yaml`'s worker types do. What it shows:
the shards spread over the workers their resource prefers, and when the worker holding shards and
the closure orchestrator dies, everything comes back on the nodes left: WebSocket subscribers keep
receiving right values on the sockets they hold, the closure completes with nothing done twice,
and the market feed, restarted elsewhere, never holds two upstream connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import ray
from conftest import RAY_SECRETS, free_port, ray_secrets
from gateway_support import ALICE, decode, make_settings, running_gateway, token
from ray.cluster_utils import Cluster
from ray.util.state import get_actor
from realtime_support import assert_replay_values, engine_settings, eventually, replay_of, running_engine, unique
from standins.alpaca_stream import AlpacaStreamStandIn
from test_closure_orchestrator import (
    ALICE as CLOSURE_USER,
)
from test_closure_orchestrator import (
    SESSION_S,
    assert_closed_exactly_once,
    closure_settings,
    holding_account,
    record,
)
from test_feed_alpaca import session_of
from websockets.asyncio.client import ClientConnection, connect

from actors import placement
from actors.closure_orchestrator import closure_process, get_orchestrator, start_orchestrator, stop_orchestrator
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine import pubsub
from engine.subscriptions import shard_of
from engine.types import PortfolioSnapshot

pytestmark = pytest.mark.cluster

HOLDINGS = [["AAPL", "IBM"], ["MSFT"], ["GOOG", "AAPL"], ["IBM", "MSFT"]]
# enough accounts that every portfolio shard, on either worker, serves some
ACCOUNTS = [
    {
        "account_id": unique(f"c-{i}"),
        "cash": f"{250 * i}.25",
        "positions": [{"symbol": s, "qty": str(i + 2)} for s in syms],
    }
    for i, syms in enumerate(HOLDINGS * 4)
]
WORKER_RESOURCES = {placement.REALTIME: 1, placement.AGENTS: 1}


@pytest.fixture(scope="module")
def cluster():
    # metrics reported every second instead of Ray's default, for the tests that scrape them
    # the nodes' environment holds the secrets, as a real node's clera.env does (settings never carry them)
    with ray_secrets():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 2, "_system_config": {"metrics_report_interval_ms": 1000}},
        )
        workers = [cluster.add_node(num_cpus=2, resources=WORKER_RESOURCES) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="warning")
    # the topology deals its actors out to the nodes it sees alive: wait until all show, resources too
    deadline = time.monotonic() + 60
    while ray.available_resources().get(placement.REALTIME, 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def test_serve_app_refuses_a_per_node_sqlite_ledger(cluster, redis_url, pg_url, tmp_path) -> None:
    """Runs before the node-failure test, while the cluster still has all its nodes."""
    from engine.config import ConfigError, load_settings
    from serve_app import require_shared_database  # imports Ray Serve: only in this test

    base = {"REDIS_URL": redis_url, "CLERA_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="DATABASE_URL is not set on a multi-node Ray cluster"):
        require_shared_database(load_settings(base, env_file=None))
    require_shared_database(load_settings({**base, "DATABASE_URL": pg_url}, env_file=None))  # shared: fine


class Subscriber:
    """One real WebSocket on the gateway, its frames read as they come; `latest` is the newest snapshot."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.latest: PortfolioSnapshot | None = None
        self.frames = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = decode(raw)
            if frame["type"] == "portfolio_update":
                self.latest = msgspec.convert(frame["snapshot"], PortfolioSnapshot)
                self.frames += 1

    async def first(self) -> PortfolioSnapshot:
        await eventually(lambda: self.latest is not None, "a first snapshot", timeout=60)
        assert self.latest is not None
        return self.latest

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def subscribers(redis_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Subscriber]]:
    """A gateway (real uvicorn, real Redis) and one WebSocket per account, all Alice's."""
    gateway_settings = make_settings(redis_url, tmp_path)
    store = SqlStore(Database(f"sqlite:///{tmp_path / 'gateway.db'}"))
    store.migrate()
    store.ensure_user(ALICE)
    for account in ACCOUNTS:
        store.add_account(ALICE, account["account_id"], status="active")
    async with running_gateway(gateway_settings, store, free_port()) as gateway:
        subs = {}
        for account in ACCOUNTS:
            ws = await connect(f"{gateway.ws}/ws/portfolio/{account['account_id']}?token={token(ALICE)}")
            subs[account["account_id"]] = Subscriber(ws)
        try:
            yield subs
        finally:
            for sub in subs.values():
                await sub.close()


def node_of(handle: ray.actor.ActorHandle) -> str:
    return get_actor(handle._actor_id.hex()).node_id


async def feed_instances(settings) -> int:
    """MarketFeed actors alive in this engine's namespace (at most one may ever hold the upstream)."""
    from ray.util.state import list_actors

    alive = await asyncio.to_thread(
        list_actors, filters=[("class_name", "=", "MarketFeed"), ("state", "=", "ALIVE")], raise_on_missing_output=False
    )
    return sum(1 for a in alive if a.ray_namespace == settings.ray_namespace)


async def test_a_dead_worker_moves_its_shards_and_closure_and_nothing_is_lost_or_repeated(
    cluster, redis_url, tmp_path
) -> None:
    ray_cluster, workers = cluster
    # one symbol shard, so all prices of a snapshot belong to one replay step
    settings = engine_settings(redis_url, tmp_path, ACCOUNTS, CLERA_SYMBOL_SHARDS="1", CLERA_PORTFOLIO_SHARDS="4")
    feed = replay_of(settings)
    # a closure in progress, on a paper world of its own (FB: a symbol the engine's accounts never
    # price, so its $100 stays the fill price of the liquidation)
    closing = closure_settings(tmp_path / "closure", redis_url)
    account_id, rel_id, broker = holding_account(closing, redis_url, symbol="FB")
    assert closure_process(closing).initiate(account_id, CLOSURE_USER, rel_id)["success"] is True
    balance = broker.get_account(account_id).cash
    try:
        with running_engine(settings, redis_url) as topo:
            orchestrator = start_orchestrator(closing)
            await asyncio.to_thread(ray.get, orchestrator.status.remote())
            worker_ids = {w.node_id for w in workers}
            shards = topo.portfolio_shards + topo.symbol_shards
            nodes = {a._actor_id.hex(): node_of(a) for a in shards}
            # the shards prefer the realtime workers and spread over both; the orchestrator an agents worker
            assert set(nodes.values()) == worker_ids
            victim_id = node_of(orchestrator)
            assert victim_id in worker_ids
            victim = next(w for w in workers if w.node_id == victim_id)
            on_victim = [
                a for a in ACCOUNTS
                if nodes[topo.portfolio_shards[shard_of(a["account_id"], 4)]._actor_id.hex()] == victim_id
            ]
            assert on_victim, "some account should be served from the node that dies"

            async with subscribers(redis_url, tmp_path) as subs:
                for account in ACCOUNTS:
                    assert_replay_values(await subs[account["account_id"]].first(), account, feed)
                # mid-closure: the first withdrawal has gone out, more are to come
                await eventually(lambda: len(record(closing, account_id).transfers) >= 1, "the first withdrawal",
                                 timeout=SESSION_S * 8 + 60)
                assert record(closing, account_id).step != "completed"
                before = {a: sub.latest for a, sub in subs.items()}

                ray_cluster.remove_node(victim)
                feeds_seen = []

                async def resumed() -> bool:
                    feeds_seen.append(await feed_instances(settings))
                    return all(
                        (snap := subs[a["account_id"]].latest) is not None
                        and snap.publish_ts > before[a["account_id"]].publish_ts + 1.0
                        and snap.as_of > before[a["account_id"]].as_of
                        for a in ACCOUNTS
                    )

                await eventually(resumed, "live snapshots on every socket after the node died", timeout=180)
                for account in ACCOUNTS:  # the same sockets, never reconnected, with right values
                    after = subs[account["account_id"]].latest
                    assert after is not None and after.seq > before[account["account_id"]].seq
                    assert_replay_values(after, account, feed)
                assert max(feeds_seen) <= 1, feeds_seen
                moved = {node_of(a) for a in shards}
                assert victim_id not in moved

            await eventually(lambda: record(closing, account_id).step == "completed", "the closure completed",
                             timeout=SESSION_S * 14 + 120)
            assert_closed_exactly_once(closing, broker, account_id, balance)
            assert node_of(get_orchestrator(closing)) != victim_id
            assert await feed_instances(settings) == 1
    finally:
        stop_orchestrator(closing)


async def test_the_feed_of_a_dead_node_reconnects_from_another_never_holding_two_connections(
    cluster, redis_url, tmp_path
) -> None:
    """The Alpaca feed against its stand-in, which counts the connections open at once (Alpaca allows
    one per key): the node holding the MarketFeed dies; the restarted feed opens the one connection
    again, resubscribes what the shards hold, and its ticks reach the subscribers."""
    ray_cluster, workers = cluster
    with ray_secrets():
        spare = ray_cluster.add_node(num_cpus=2, resources=WORKER_RESOURCES)
    ray_cluster.wait_for_nodes()
    await eventually(lambda: ray.available_resources().get(placement.REALTIME, 0) >= 2, "the spare worker", 60)
    account = {"account_id": unique("alpaca"), "cash": "100.00",
               "positions": [{"symbol": "AAPL", "qty": "3"}, {"symbol": "MSFT", "qty": "2"}]}
    with AlpacaStreamStandIn(RAY_SECRETS["BROKER_API_KEY"], RAY_SECRETS["BROKER_SECRET_KEY"]) as stand_in:
        today = session_of(time.time())
        stand_in.set_snapshot("AAPL", 190.25, today)
        stand_in.set_snapshot("MSFT", 410.5, today)
        settings = engine_settings(
            redis_url, tmp_path, [account], CLERA_FEED="alpaca", BROKER_API_KEY=stand_in.key,
            BROKER_SECRET_KEY=stand_in.secret, CLERA_ALPACA_STREAM_URL=stand_in.stream_url,
            CLERA_ALPACA_DATA_URL=stand_in.data_url, CLERA_PORTFOLIO_SHARDS="2",
        )
        hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=30)
        await hub.start()
        with running_engine(settings, redis_url) as topo:
            listener = await hub.listen(account["account_id"])
            await eventually(lambda: stand_in.subscribed == {"AAPL", "MSFT"}, "the feed subscribed", 60)

            async def priced(aapl: float) -> None:
                async def shown() -> bool:
                    stand_in.push_trades({"S": "AAPL", "p": aapl}, {"S": "MSFT", "p": 400.0})
                    snap = await listener.get(timeout=5)
                    return snap.total_value == pytest.approx(100.0 + 3 * aapl + 2 * 400.0, abs=0.006)
                await eventually(shown, f"AAPL at {aapl} in the snapshots", timeout=120)

            await priced(191.0)
            feed_node = node_of(topo.market_feed)
            victim = next(w for w in [*workers, spare] if w.node_id == feed_node)
            ray_cluster.remove_node(victim)
            await eventually(lambda: stand_in.connections >= 2 and stand_in.subscribed == {"AAPL", "MSFT"},
                             "the restarted feed connected and resubscribed", timeout=180)
            await priced(195.5)
            assert node_of(topo.market_feed) != feed_node
            assert stand_in.max_open == 1 and stand_in.open == 1
            await listener.close()
        await hub.close()
