"""`clera profiles collect`: the command line around `profile_collector` (arguments, progress, summary)."""

from __future__ import annotations

import argparse
import datetime as dt

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from brokerage.company_profiles import load_default_company_profiles
from brokerage.fmp import FmpClient
from brokerage.profile_collector import (
    CollectSummary,
    broker_symbols,
    collect_profiles,
    parse_symbols,
    start_from,
    symbols_from_file,
)
from brokerage.store_factory import store_from_settings
from engine.config import Settings

FAILURES_SHOWN = 50


class RateColumn(ProgressColumn):
    """Symbols a minute, the unit of FMP's limit."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- /min" if speed is None else f"{speed * 60:,.0f} /min", style="progress.data.speed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--symbols", help="symbols to collect, comma-separated (default: the broker's tradable assets)")
    chosen.add_argument("--from-file", help="file of symbols (one or more a line, `#` comments)")
    parser.add_argument("--batch-size", type=int, default=50, help="profiles written to the store at once (default 50)")
    parser.add_argument("--start-from-symbol", help="start the list at this symbol (resuming an interrupted run)")


def _symbols(args: argparse.Namespace, settings: Settings) -> list[str]:
    if args.symbols:
        return parse_symbols(args.symbols)
    if args.from_file:
        return symbols_from_file(args.from_file)
    return broker_symbols(settings)


def _print_summary(console: Console, summary: CollectSummary) -> None:
    table = Table(title="company profiles", show_header=False)
    table.add_row("symbols", f"{summary.total:,}")
    table.add_row("[green]stored[/green]", f"{summary.stored:,}")
    table.add_row("skipped (stored and fresh)", f"{summary.skipped:,}")
    table.add_row("[red]failed[/red]", f"{len(summary.failed):,}")
    console.print(table)
    for symbol, reason in list(summary.failed.items())[:FAILURES_SHOWN]:
        console.print(f"  [red]{symbol}[/red]: {reason}", soft_wrap=True)
    if len(summary.failed) > FAILURES_SHOWN:
        console.print(f"  ... and {len(summary.failed) - FAILURES_SHOWN} more")
    if summary.stopped:
        console.print(f"[red]stopped:[/red] {summary.stopped}")


def run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    if args.batch_size < 1:
        console.print("[red]--batch-size must be at least 1[/red]")
        return 2
    store = store_from_settings(settings)
    client = FmpClient.from_settings(settings)
    if client is None:
        written = load_default_company_profiles(store)
        console.print(
            "FINANCIAL_MODELING_PREP_API_KEY is not set: offline profiles only "
            f"({written:,} written; {store.count_company_profiles():,} stored)."
        )
        return 0
    try:
        symbols = start_from(list(dict.fromkeys(_symbols(args, settings))), args.start_from_symbol)
    except (OSError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    console.print(
        f"collecting {len(symbols):,} profiles from {client.base_url} "
        f"(at most {settings.fmp_rate_limit} requests per {settings.fmp_rate_window_s:g} s)"
    )
    columns = (
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("profiles", total=len(symbols))
            summary = collect_profiles(
                store, client, symbols, batch_size=args.batch_size,
                max_age=dt.timedelta(seconds=settings.profile_max_age_s),
                on_symbol=lambda symbol, outcome: progress.advance(task),
            )
    finally:
        client.close()
    _print_summary(console, summary)
    return 1 if summary.stopped else 0
