"""The terminal view of `clera serve`: a rich table of accounts' live values, read from Redis.

Reading only Redis (never Ray) keeps it usable against any running engine. While it shows an
account it keeps that account's interest key alive, so the shards publish it live.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import msgspec
import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.redis_keys import interest_key, last_key
from engine.types import PortfolioSnapshot, snapshot_json_decoder

COLUMNS = ("account", "label", "value", "today", "cash", "positions", "seq", "engine latency", "source")


def read_snapshots(
    client: redis.Redis, account_ids: Sequence[str], interest_ttl_s: float
) -> dict[str, PortfolioSnapshot | None]:
    """The last snapshot of each account (None when there is none or it is unreadable)."""
    pipe = client.pipeline(transaction=False)
    for account_id in account_ids:
        pipe.set(interest_key(account_id), b"1", px=max(1, int(interest_ttl_s * 1000)))
    pipe.mget([last_key(a) for a in account_ids])
    raws = pipe.execute()[-1] if account_ids else []
    out: dict[str, PortfolioSnapshot | None] = {}
    for account_id, raw in zip(account_ids, raws, strict=True):
        try:
            out[account_id] = None if raw is None else snapshot_json_decoder.decode(raw)
        except msgspec.DecodeError:
            out[account_id] = None
    return out


def portfolio_table(rows: Sequence[tuple[str, str]], snapshots: dict[str, PortfolioSnapshot | None]) -> Table:
    """One row per (account id, label), and a total of the accounts that have a value."""
    table = Table(title="live portfolios (Ctrl-C to stop)", header_style="bold")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("account", "label", "source") else "right")
    total = change = 0.0
    for account_id, label in rows:
        snap = snapshots.get(account_id)
        if snap is None:
            table.add_row(account_id, label, "-", "-", "-", "-", "-", "-", "waiting")
            continue
        total += snap.total_value
        change += snap.day_change
        table.add_row(
            account_id,
            label,
            f"${snap.total_value:,.2f}",
            _change(snap.day_change, snap.day_change_pct),
            f"${snap.cash:,.2f}",
            str(len(snap.positions)),
            str(snap.seq),
            f"{max(0.0, snap.publish_ts - snap.ingest_ts) * 1000:.0f} ms",
            f"{snap.source} {snap.session}".strip(),
        )
    base = total - change
    table.add_section()
    table.add_row("total", "", f"${total:,.2f}", _change(change, change * 100 / base if base else 0.0), *[""] * 5)
    return table


def _change(amount: float, pct: float) -> Text:
    return Text(f"{amount:+,.2f} ({pct:+.2f}%)", style="green" if amount >= 0 else "red")


def run_console(
    redis_url: str,
    rows: Sequence[tuple[str, str]],
    interest_ttl_s: float,
    stop: threading.Event,
    console: Console | None = None,
    period_s: float = 0.5,
) -> None:
    """Refresh the table until `stop` is set (or Ctrl-C reaches the caller)."""
    client = redis.Redis.from_url(redis_url)
    ids = [a for a, _ in rows]
    try:
        with Live(console=console, refresh_per_second=4) as live:
            while not stop.is_set():
                try:
                    live.update(portfolio_table(rows, read_snapshots(client, ids, interest_ttl_s)))
                except redis.RedisError as exc:
                    live.update(Text(f"Redis unreachable: {exc}", style="red"))
                stop.wait(period_s)
    finally:
        client.close()
