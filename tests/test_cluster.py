"""The engine on a real multi-node Ray cluster (two raylets on this machine).

Run in its own pytest process (`pytest -m cluster`, which `make test` does): it starts its own
cluster, so it cannot share the session's single-node Ray. What it shows: the shards spread over
the nodes, every value stays right, and when a node dies its actors come back on the survivor and
publishing resumes from Redis state, not from anything the dead node held.
"""

from __future__ import annotations

import time

import pytest
import ray
from ray.cluster_utils import Cluster

from engine import pubsub
from engine.config import load_settings
from engine.subscriptions import shard_of
from realtime_support import assert_replay_values, engine_settings, eventually, replay_of, running_engine

pytestmark = pytest.mark.cluster

HOLDINGS = [["AAPL", "IBM"], ["MSFT"], ["GOOG", "AAPL"], ["IBM", "MSFT"]]
# enough accounts that every portfolio shard, on either node, serves some
ACCOUNTS = [
    {"account_id": f"c-{i}", "cash": f"{250 * i}.25", "positions": [{"symbol": s, "qty": str(i + 2)} for s in syms]}
    for i, syms in enumerate(HOLDINGS * 4)
]


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="warning")
    # the topology deals its actors out to the nodes it sees alive: wait until both show, resources too
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_serve_app_refuses_a_per_node_sqlite_ledger(cluster, redis_url, pg_url, tmp_path) -> None:
    """Runs before the node-failure test, while the cluster still has two nodes."""
    from engine.config import ConfigError
    from serve_app import require_shared_database  # imports Ray Serve: only in this test

    base = {"REDIS_URL": redis_url, "CLERA_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="DATABASE_URL is not set on a multi-node Ray cluster"):
        require_shared_database(load_settings(base, env_file=None))
    require_shared_database(load_settings({**base, "DATABASE_URL": pg_url}, env_file=None))  # shared: fine


async def test_shards_spread_over_nodes_and_survive_a_node_failure(cluster, redis_url, tmp_path) -> None:
    ray_cluster, worker = cluster
    # one symbol shard, so all prices of a snapshot belong to one replay step
    settings = engine_settings(redis_url, tmp_path, ACCOUNTS, CLERA_SYMBOL_SHARDS="1", CLERA_PORTFOLIO_SHARDS="4")
    feed = replay_of(settings)
    hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=30)
    await hub.start()
    with running_engine(settings, redis_url) as topo:
        shards = topo.portfolio_shards + topo.symbol_shards
        # each actor says where it runs (the state API would ask whichever Ray of this machine started last)
        where = [a.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()) for a in shards]
        nodes = {a._actor_id.hex(): node for a, node in zip(shards, ray.get(where, timeout=60), strict=True)}
        assert len(set(nodes.values())) == 2, "the scheduler should spread the shards over both nodes"

        listeners = {a["account_id"]: await hub.listen(a["account_id"]) for a in ACCOUNTS}
        for account in ACCOUNTS:
            assert_replay_values(await listeners[account["account_id"]].get(timeout=60), account, feed)

        # an account whose portfolio shard lives on the worker node, to be sure the failure hits it
        on_worker = [
            a for a in ACCOUNTS
            if nodes[topo.portfolio_shards[shard_of(a["account_id"], settings.portfolio_shards)]._actor_id.hex()]
            == worker.node_id
        ]
        assert on_worker, "some account should be served from the worker node"
        account = on_worker[0]
        listener = listeners[account["account_id"]]
        before = await listener.get(timeout=30)

        ray_cluster.remove_node(worker)

        async def resumed() -> bool:
            snap = await listener.get(timeout=30)
            return snap.publish_ts > before.publish_ts + 1.0 and snap.as_of > before.as_of

        await eventually(resumed, "live snapshots after the node died", timeout=120)
        after = await listener.get(timeout=30)
        assert after.seq > before.seq
        assert_replay_values(after, account, feed)
        for listener in listeners.values():
            await listener.close()
    await hub.close()
