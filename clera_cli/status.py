"""`clera status`: one screen of a running system (nodes, actors, feed, ticks/s, sockets, chat, closures)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from clera_cli import console
from engine.config import load_settings

if TYPE_CHECKING:
    from actors.status import SystemStatus

RAY_TOKEN_FILE = Path.home() / ".ray" / "auth_token"  # where Ray keeps the token of a cluster it started


def status_view(status: SystemStatus, address: str) -> Group:
    """Node ids cut to their first 8 characters: enough to tell a handful of nodes apart."""
    nodes = Table(title="nodes", title_justify="left", header_style="bold", box=None)
    for column in ("node", "address", "state", "CPUs", "types"):
        nodes.add_column(column)
    for n in status.nodes:
        nodes.add_row(n.node_id[:8], n.address, Text("alive", "green") if n.alive else Text("dead", "red"),
                      f"{n.cpus:g}", ", ".join(n.node_types) or "-")
    actors = Table(title="actors", title_justify="left", header_style="bold", box=None)
    for column in ("name", "state", "restarts", "node", "pid"):
        actors.add_column(column)
    for a in status.actors:
        actors.add_row(a.name, Text(a.state, "green" if a.state == "ALIVE" else "yellow"),
                       Text(str(a.restarts), "yellow" if a.restarts else ""), a.node_id[:8], str(a.pid))
    feed = status.feed or {}
    feed_state = (Text(f"{feed.get('source')} connected", "green") if feed.get("connected")
                  else Text(f"{feed.get('source', 'feed')} DOWN {feed.get('error') or ''}", "red"))
    rate = "?" if status.ticks_per_s is None else f"{status.ticks_per_s:,.0f}"
    engine = Text.assemble(
        ("feed ", "dim"), feed_state, ("   subscribed ", "dim"), str(feed.get("subscribed", "?")),
        ("   reconnects ", "dim"), str(feed.get("reconnects", "?")), ("   ticks/s ", "dim"), rate,
        ("   shards ", "dim"), f"{status.shards_alive}/{status.shards_expected}",
    )
    orders = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(status.orders.items())) or "0"
    traffic = Text.assemble(
        ("open sockets ", "dim"), f"{status.open_sockets:,.0f}", ("   chat turns ", "dim"), f"{status.chat_turns:,.0f}",
        ("   orders ", "dim"), orders, ("   metrics from ", "dim"), f"{status.metrics_nodes}/{len(status.nodes)} nodes",
    )
    steps = ", ".join(f"{a} ({step})" for a, step in sorted(status.closures.items())) or "none"
    closures = Text.assemble(("closures in progress ", "dim"), str(len(status.closures)), "  ", (steps, ""))
    header = Text.assemble(("clera status ", "bold"), (address, "cyan"), "  ",
                           (time.strftime("%H:%M:%S", time.localtime(status.taken_at)), "dim"))
    return Group(header, engine, traffic, closures, Text(""), nodes, Text(""), actors)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    address = settings.ray_address or "auto"
    if "RAY_AUTH_MODE" not in os.environ and RAY_TOKEN_FILE.is_file():
        # a Ray started by `clera serve` requires the token it saved there, and Ray's client sends it
        # only in token mode (a cluster without authentication accepts a client that sends one); Ray
        # reads the mode when it is imported
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray  # only now, after RAY_AUTH_MODE is set: Ray reads it when it is imported

    from actors import status  # imports Ray

    try:
        ray.init(address=address, namespace=settings.ray_namespace, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        console.print(f"[red]no Ray cluster at {address}: {exc}[/red]")
        return 2
    try:
        console.print(status_view(asyncio.run(status.gather(settings)), address))
    finally:
        ray.shutdown()
    return 0
