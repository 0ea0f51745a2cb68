"""What `clera watch` draws: one portfolio frame as a table, with its market time and its latency."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Group
from rich.table import Table
from rich.text import Text

NEW_YORK = ZoneInfo("America/New_York")


def watch_latency_s(snapshot: dict[str, Any], received_at: float) -> float | None:
    """Wall time from the newest tick's entry into the engine (else the publish) to this terminal.

    Never from `as_of`: that is the tick's market time, years in the past under replay."""
    since = snapshot.get("ingest_ts") or snapshot.get("publish_ts")
    return None if not since else max(0.0, received_at - since)


def market_time(moment: float | None) -> str:
    """A market moment (unix seconds) on the exchange's clock, e.g. `2012-06-04 10:31:05 ET`."""
    if not moment:
        return "?"
    return dt.datetime.fromtimestamp(moment, NEW_YORK).strftime("%Y-%m-%d %H:%M:%S ET")


def portfolio_view(account: str, frame: dict[str, Any] | None, status: str, received_at: float = 0.0) -> Group:
    header = Text.assemble(("clera watch ", "bold"), (account, "cyan"), "  ", (status, "dim"))
    if frame is None:
        return Group(header, Text("waiting for the first snapshot ..."))
    snap = frame.get("snapshot", {})
    change_style = "green" if frame.get("raw_return", 0) >= 0 else "red"
    latency = watch_latency_s(snap, received_at)
    summary = Text.assemble(
        ("value ", "dim"), (frame["total_value"], "bold"), ("   today ", "dim"), (frame["today_return"], change_style),
        ("   seq ", "dim"), str(frame.get("seq")), ("   source ", "dim"), str(frame.get("source") or "?"),
        ("   market time ", "dim"), market_time(snap.get("as_of")),
        ("   latency ", "dim"), "?" if latency is None else f"{latency * 1000:.0f} ms",
    )
    table = Table(box=None, header_style="bold")
    for column in ("symbol", "qty", "last", "prev close", "value", "day $", "day %"):
        table.add_column(column, justify="left" if column == "symbol" else "right")
    for p in snap.get("positions", []):
        style = "green" if p["day_change"] >= 0 else "red"
        table.add_row(
            p["symbol"], f"{p['qty']:,.4g}", f"{p['last_price']:,.2f}", f"{p['prev_close']:,.2f}",
            f"{p['market_value']:,.2f}", Text(f"{p['day_change']:+,.2f}", style),
            Text(f"{p['day_change_pct']:+.2f}%", style),
        )
    cash = Text.assemble(
        ("cash ", "dim"), f"{snap.get('cash', 0):,.2f}", ("   session ", "dim"), str(snap.get("session", ""))
    )
    return Group(header, summary, cash, table)
