"""Where the engine's actors and the agent deployment go: their node type preferred, never required.

A cluster's node types carry custom resources (`clera_realtime` on the realtime shard workers,
`clera_agents` on the agents and brokerage/closure workers, see `cluster.yaml`). They are used
only as soft hints: an actor asks for a node that has its resource (any alive node when none has
it, e.g. a laptop) through a label selector on Ray's node-id label, with a fallback to every other
node. Actors are dealt out over those nodes in turn, so that one node's death takes only part of
the engine, and a restart after that death lands on whichever node is left (the fallback).

Not `NodeAffinitySchedulingStrategy(soft=True)`: on a three-node cluster it was seen to put an actor
on another node while its target was alive and idle. The label selector is honoured.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import ray

REALTIME = "clera_realtime"  # the symbol and portfolio shards, the market feed, the position sync
AGENTS = "clera_agents"  # the agent deployment, the closure orchestrator and its tasks
NODE_ID_LABEL = "ray.io/node-id"


def _alive() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _offering(nodes: list[dict[str, Any]], resource: str) -> list[str]:
    return sorted(n["NodeID"] for n in nodes if n.get("Resources", {}).get(resource, 0) > 0)


def preferred_nodes(resource: str) -> list[str]:
    """Alive nodes that offer `resource`, else every alive node; sorted, so every caller agrees."""
    alive = _alive()
    return _offering(alive, resource) or sorted(n["NodeID"] for n in alive)


def prefer(nodes: str) -> dict[str, Any]:
    """Actor options: one of `nodes` (comma-separated ids) if it can, any other node if not."""
    return {
        "label_selector": {NODE_ID_LABEL: f"in({nodes})"},
        "fallback_strategy": [{"label_selector": {NODE_ID_LABEL: f"!in({nodes})"}}],
    }


def spread(resource: str) -> Iterator[dict[str, Any]]:
    """Actor options for a series of actors: the preferred nodes in turn, each a soft preference.

    Ray's own SPREAD strategy is best effort and was seen to put every shard on one node when they
    all start at once; with a single node there is nothing to choose, so Ray decides."""
    if len(_alive()) < 2:
        return itertools.repeat({})
    return (prefer(node) for node in itertools.cycle(preferred_nodes(resource)))


def serve_placement(resource: str) -> dict[str, Any]:
    """`ray_actor_options` for a Serve deployment: replicas prefer the nodes that have `resource`
    (a label selector on their node ids) and fall back to the others; Serve still spreads them.
    Nothing when no node has it, or when Ray is not up yet (the module-level app of `serve_app` is
    built at import; the cluster's controller builds it again with Ray up). The node ids are those
    alive at deploy time: a typed node added later takes replicas through the fallback."""
    if not ray.is_initialized():
        return {}
    typed = ",".join(_offering(_alive(), resource))
    return prefer(typed) if typed else {}
