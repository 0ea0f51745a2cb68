"""Scale-out benchmark: prints ONE JSON object.

The realtime benchmark's large scenario (bench/realtime.py: 20,000 accounts x 20 positions, 3,000
symbols, 10% watched, a simulated feed offering a fixed tick rate) run by the same code on two local
Ray clusters one after the other: **one_node** (a head alone) and **two_nodes** (a head and a worker,
the shards dealt out over both as `actors/placement.py` does on a cluster). Both clusters live on
this machine, so the difference is the cost of crossing nodes (object transfer between raylets
instead of one node's shared memory), not a speed-up: the cores are the same.

`per_shard` gives what one portfolio shard carried in the one-node run (accounts, holder updates
and snapshots a second, CPU), the figures the README's projection for 1M accounts rests on.

`--quick`: 50k ticks/s offered for 8 s per cluster (about two minutes with start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import realtime
from bench_support import print_json_only

from actors import placement

NODE_CPUS = 2


def per_shard(run: dict[str, Any], accounts: int) -> dict[str, Any]:
    """What one portfolio shard carried in `run`: the unit the projection multiplies."""
    shards = run["shards"]["portfolio"]
    cpu = run["cpu_cores_by_process"]
    portfolio_cpu = [v for k, v in cpu.items() if k.startswith("portfolio_shard_")]
    symbol_cpu = [v for k, v in cpu.items() if k.startswith("symbol_shard_")]
    return {
        "accounts": accounts // shards,
        "holder_updates_per_s": round(run["holder_updates_per_s"] / shards),
        "live_snapshots_per_s": round(run["snapshots_published_per_s"] / shards),
        "cpu_cores": round(sum(portfolio_cpu) / max(1, len(portfolio_cpu)), 2),
        "symbol_shard_cpu_cores": round(sum(symbol_cpu) / max(1, len(symbol_cpu)), 2),
        "feed_cpu_cores": cpu.get("market_feed"),
        "redis_cpu_cores": cpu.get("redis"),
    }


async def on_cluster(nodes: int, scenario: dict, rate: float, duration: float, warmup: float, redis_url: str,
                     accounts_file: Path, ids: list[str]) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    realtime.progress(f"{nodes}-node cluster: starting")
    typed = {placement.REALTIME: 1}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": NODE_CPUS, "resources": typed})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=NODE_CPUS, resources=typed)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="error", log_to_driver=False)
    try:
        deadline = time.monotonic() + 60
        while ray.available_resources().get(placement.REALTIME, 0) < nodes and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        run = await realtime.run_ray(scenario, rate, duration, redis_url, accounts_file, ids, warmup)
        run["nodes"] = nodes
        return run
    finally:
        ray.shutdown()
        cluster.shutdown()


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("RAY_worker_niceness", "0")  # as bench/realtime.py: the same priority everywhere
    scenario = realtime.SCENARIOS["large"]
    duration, warmup = (8.0, 3.0) if args.quick else (15.0, 5.0)
    out: dict[str, Any] = {
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
        "workload": scenario,
        "offered_ticks_per_s": args.rate,
    }
    with tempfile.TemporaryDirectory() as tmp:
        accounts_file = Path(tmp) / "large.json"
        ids = realtime.make_accounts(scenario, accounts_file)
        for name, nodes in (("one_node", 1), ("two_nodes", 2)):
            out[name] = await on_cluster(nodes, scenario, args.rate, duration, warmup, args.redis, accounts_file, ids)
    one, two = out["one_node"], out["two_nodes"]
    out["side_by_side"] = {
        key: {"one_node": one[key], "two_nodes": two[key]}
        for key in ("ticks_per_s", "p50_ms", "p99_ms", "ingest_to_publish_p99_ms", "backlog_growth_ms_per_s",
                    "snapshots_published_per_s", "peak_rss_mb")
    }
    out["cost_of_crossing"] = {
        "throughput_ratio": ratio(two["ticks_per_s"], one["ticks_per_s"]),
        "p50_ratio": ratio(two["p50_ms"], one["p50_ms"]),
        "p99_ratio": ratio(two["p99_ms"], one["p99_ms"]),
    }
    out["per_shard"] = per_shard(one, scenario["accounts"])
    out["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 s per cluster instead of 15")
    parser.add_argument("--rate", type=float, default=50_000, help="ticks/s the simulated feed offers")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="external Redis URL")
    args = parser.parse_args()
    print_json_only(lambda: asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
