"""What `clera status` shows, gathered from a running cluster: nodes, the system's actors and their
restarts, the engine's own state (feed, ticks/s, closures in progress) and its metrics as every
node's Prometheus endpoint serves them (open sockets, chat turns, orders).

Reads only what Ray keeps anyway (its node and actor tables, which need no dashboard), the engine
actors' `status` calls and the metrics endpoints: nothing here changes the system it looks at.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import httpx
import msgspec
import ray
from prometheus_client.parser import text_string_to_metric_families
from ray._private import state

from actors import placement, topology
from actors.closure_orchestrator import get_orchestrator
from actors.common import lookup, market_feed_name
from engine import metrics
from engine.config import Settings

SYSTEM_PREFIXES = ("clera.", "SERVE_REPLICA::", "SERVE_CONTROLLER", "SERVE_PROXY")
TICK_SAMPLE_S = 1.0
Tags = tuple[tuple[str, str], ...]  # a metric sample's labels, sorted


class NodeRow(msgspec.Struct):
    node_id: str
    address: str
    alive: bool
    cpus: float
    node_types: list[str]  # the custom resources of `actors.placement` it offers
    metrics_port: int


class ActorRow(msgspec.Struct):
    name: str
    cls: str
    state: str
    restarts: int
    node_id: str
    pid: int


class SystemStatus(msgspec.Struct, kw_only=True):
    taken_at: float
    nodes: list[NodeRow]
    actors: list[ActorRow]
    feed: dict[str, Any] | None  # the feed's own status (source, connected, subscribed, reconnects)
    shards_alive: int
    shards_expected: int
    ticks_per_s: float | None
    open_sockets: float
    chat_turns: float
    orders: dict[str, float]  # outcome -> count
    closures: dict[str, str]  # unfinished closure -> the step it is at
    metrics_nodes: int  # nodes whose Prometheus endpoint answered


def nodes() -> list[NodeRow]:
    rows = []
    for n in ray.nodes():
        resources = n.get("Resources", {})
        rows.append(NodeRow(
            node_id=n["NodeID"], address=n.get("NodeManagerAddress", ""), alive=bool(n.get("Alive")),
            cpus=float(resources.get("CPU", 0)),
            node_types=[r for r in (placement.REALTIME, placement.AGENTS) if resources.get(r, 0) > 0],
            metrics_port=int(n.get("MetricsExportPort") or 0),
        ))
    return rows


def system_actors() -> list[ActorRow]:
    """The engine's named actors and Serve's, from the GCS actor table: `ray.util.state` would need
    the dashboard, which a cluster may run without."""
    rows = []
    for info in state.actors().values():
        name = info.get("Name") or ""
        if not name.startswith(SYSTEM_PREFIXES) or info.get("State") == "DEAD":
            continue
        rows.append(ActorRow(
            name=name, cls=info.get("ActorClassName", ""), state=info.get("State", ""),
            restarts=int(info.get("NumRestarts", 0)), node_id=(info.get("Address") or {}).get("NodeID", ""),
            pid=int(info.get("Pid", 0)),
        ))
    return sorted(rows, key=lambda r: r.name)


def scrape(node_rows: list[NodeRow], timeout_s: float = 3.0) -> tuple[dict[str, dict[Tags, float]], int]:
    """The engine's metrics summed over every alive node's Prometheus endpoint: name (without Ray's
    `ray_` prefix) -> {tags without Ray's own: value}; and how many endpoints answered."""
    own_tags = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "JobId"}
    out: dict[str, dict[Tags, float]] = defaultdict(lambda: defaultdict(float))
    answered = 0
    with httpx.Client(timeout=timeout_s) as client:
        for node in node_rows:
            if not node.alive or not node.metrics_port:
                continue
            try:
                text = client.get(f"http://{node.address}:{node.metrics_port}/metrics").text
            except httpx.HTTPError:
                continue
            answered += 1
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if not sample.name.startswith("ray_clera_"):
                        continue
                    tags = tuple(sorted(
                        (k, v) for k, v in sample.labels.items() if k not in own_tags and not k.startswith("otel_")
                    ))
                    out[sample.name.removeprefix("ray_")][tags] += sample.value
    return out, answered


def total(scraped: dict[str, dict[Tags, float]], name: str, **tags: str) -> float:
    """Sum of one metric's samples whose tags include `tags`."""
    wanted = set(tags.items())
    return sum(v for t, v in scraped.get(name, {}).items() if wanted <= set(t))


async def _feed_ticks(settings: Settings) -> tuple[dict[str, Any] | None, float | None]:
    feed = lookup(market_feed_name(), settings.ray_namespace)
    if feed is None:
        return None, None
    try:
        first: dict[str, Any] = await asyncio.wait_for(feed.status.remote(), 5)
        await asyncio.sleep(TICK_SAMPLE_S)
        second: dict[str, Any] = await asyncio.wait_for(feed.status.remote(), 5)
    except (TimeoutError, ray.exceptions.RayError):
        return None, None
    rate = (second["stats"]["ticks"] - first["stats"]["ticks"]) / TICK_SAMPLE_S
    return second["feed"], max(0.0, rate)


async def _closures(settings: Settings) -> dict[str, str]:
    handle = get_orchestrator(settings)
    if handle is None:
        return {}
    try:
        status = await asyncio.wait_for(handle.status.remote(), 5)
    except (TimeoutError, ray.exceptions.RayError):
        return {}
    return {a: status["last_steps"].get(a, "initiated") for a in status["unfinished"]}


async def gather(settings: Settings) -> SystemStatus:
    node_rows = nodes()
    (feed, rate), health, closures = await asyncio.gather(
        _feed_ticks(settings), topology.health(settings), _closures(settings)
    )
    scraped, answered = await asyncio.to_thread(scrape, node_rows)
    shards = health["symbol_shards"] + health["portfolio_shards"]
    orders: dict[str, float] = defaultdict(float)
    for tags, value in scraped.get(metrics.ORDERS.name + "_total", {}).items():
        orders[dict(tags).get("outcome", "?")] += value
    return SystemStatus(
        taken_at=time.time(),
        nodes=node_rows,
        actors=await asyncio.to_thread(system_actors),
        feed=feed,
        shards_alive=sum(1 for s in shards if s["alive"]),
        shards_expected=len(shards),
        ticks_per_s=rate,
        open_sockets=total(scraped, metrics.OPEN_WEBSOCKETS.name),
        chat_turns=total(scraped, metrics.CHAT_TURNS.name + "_total"),
        orders=dict(orders),
        closures=closures,
        metrics_nodes=answered,
    )
