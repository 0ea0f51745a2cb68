"""`clera closure monitor`: read closures' log lines and records, colour-coded (the seed's monitor script).

    clera closure monitor --account ID [--follow] [--lines N] [--summary]
    clera closure monitor --user ID [--recent] [--lines N] [--summary]
    clera closure monitor USER_ID [--recent] [--lines N] [--summary]
    clera closure monitor --all

Lines and records come from the closure store (the store's database: SQLite under CLERA_DATA_DIR or
DATABASE_URL), which every node writes; when the store has nothing (or cannot be read) the monitor
falls back to the log files `CLERA_DATA_DIR/logs/account_closures/closure_{account}_{timestamp}.log`
of this machine. The monitor only reads: it never creates a database or a table.

Colours follow the line's icon and keywords: blue information, green success, yellow warnings and
retries, red errors and failures, cyan email, magenta timing.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from rich.console import Console
from rich.text import Text

from brokerage.closure.monitor_source import Source, open_source
from brokerage.closure.monitor_style import progress_bar, progress_text, step_style, styled, when_text
from brokerage.closure.records import FINISHED, STEP_NUMBER, TOTAL_STEPS, ClosureRecord
from brokerage.closure.steps import withdrawn
from engine.config import Settings

RECENT_LINES = 20
_CURRENT_STEP = re.compile(r"Current Step: (\w+)")


class Monitor:
    def __init__(self, source: Source, console: Console) -> None:
        self.source = source
        self.console = console

    def say(self, text: Text | str, style: str | None = None) -> None:
        self.console.print(text if isinstance(text, Text) else Text(text, style=style or ""), soft_wrap=True)

    def flush(self) -> None:
        self.console.file.flush()

    def print_lines(self, lines: list[str]) -> None:
        for line in lines:
            self.say(styled(line))
        self.flush()

    def notes(self) -> None:
        for note in self.source.notes:
            self.say(note, "dim")
        self.source.notes.clear()

    # -- one closure ---------------------------------------------------------------------------
    def header(self, record: ClosureRecord | None, account_id: str, source: str) -> None:
        if record is None:
            self.say(
                Text.assemble(("closure of account ", "bold"), (account_id, "bold cyan"), (f"  ({source})", "dim"))
            )
            return
        self.say(Text.assemble(
            ("closure of account ", "bold"), (record.account_id, "bold cyan"), ("  user ", "dim"), record.user_id,
            ("  step ", "dim"), (record.step, step_style(record.step)), f" ({progress_text(record)})",
            ("  ", ""), (record.confirmation_code, "bold"), (f"  ({source})", "dim"),
        ))

    def summary(self, record: ClosureRecord | None, account_id: str, lines: list[str]) -> None:
        if record is None:  # only log files: the last step they name
            steps = [m.group(1) for line in lines for m in [_CURRENT_STEP.search(line)] if m]
            step = steps[-1] if steps else "unknown"
            number = STEP_NUMBER.get(step, 0)
            self.say(Text.assemble(("account      ", "dim"), (account_id, "bold cyan")))
            self.say(
                Text.assemble(
                    ("step         ", "dim"),
                    (step, step_style(step)),
                    f"  ({'failed' if number < 0 else f'step {number}/{TOTAL_STEPS}'}, from the log files)",
                )
            )
            self.say(Text.assemble(("log lines    ", "dim"), str(len(lines))))
            if lines:
                self.say(Text.assemble(("last line    ", "dim"), styled(lines[-1])))
            return
        number = STEP_NUMBER.get(record.step, 0)
        rows: list[tuple[str, Text | str]] = [
            ("account", Text(record.account_id, "bold cyan")),
            ("user", record.user_id),
            ("step", Text.assemble((record.step, step_style(record.step)), f"  ({progress_text(record)})")),
            (
                "progress",
                Text.assemble((progress_bar(number), step_style(record.step)), f" {max(number, 0)}/{TOTAL_STEPS}"),
            ),
            ("confirmation", record.confirmation_code),
            ("initiated", when_text(record.initiated_at)),
            ("updated", when_text(record.updated_at)),
        ]
        if record.completed_at is not None:
            rows.append(("completed", when_text(record.completed_at)))
        if record.transfers:
            rows.append(
                (
                    "withdrawn",
                    f"${withdrawn(record):,.2f} in {sum(t.status == 'COMPLETE' for t in record.transfers)}"
                    f" completed of {len(record.transfers)} transfers",
                )
            )
            for t in record.transfers:
                style = {"COMPLETE": "green", "REJECTED": "red", "RETURNED": "red", "CANCELED": "red"}.get(
                    t.status, "yellow"
                )
                rows.append(("  transfer", Text.assemble(f"{t.id} ${t.amount:,.2f} ", (t.status, style),
                                                         f" attempt {t.attempt} {when_text(t.created_at)}")))
        if record.failure_reason:
            rows.append(("failure", Text(record.failure_reason, "red")))
        rows.append(("log lines", str(len(lines))))
        for label, value in rows:
            self.say(Text.assemble((f"{label:<13}", "dim"), value))
        if record.history:
            self.say(Text("history", "dim"))
            for entry in record.history:
                self.say(Text.assemble(f"  {when_text(entry.at)}  ", (f"{entry.step:<27}", step_style(entry.step)),
                                       entry.message))

    def account(self, account_id: str, *, limit: int = 0, summary: bool = False) -> tuple[bool, int]:
        """Shows one closure; returns (found, lines shown so far, for --follow)."""
        record = self.source.record(account_id)
        lines, where = self.source.lines(account_id)
        self.notes()
        if record is None and not lines:
            return False, 0
        self.header(record, account_id, where)
        if summary:
            self.summary(record, account_id, lines)
        else:
            self.print_lines(lines[-limit:] if limit > 0 else lines)
        self.flush()
        return True, len(lines)

    def follow(self, account_id: str, seen: int, interval_s: float) -> None:
        """Prints the account's new lines as they are written, until interrupted (Ctrl-C)."""
        self.say(f"following {account_id} (Ctrl-C stops) ...", "dim")
        self.flush()
        while True:
            time.sleep(interval_s)
            lines, _ = self.source.lines(account_id)
            self.notes()
            if len(lines) < seen:  # the store became unreadable and the files have fewer lines: start over
                seen = 0
            if len(lines) > seen:
                self.print_lines(lines[seen:])
                seen = len(lines)

    # -- many closures ---------------------------------------------------------------------------
    def user(self, user_id: str, *, recent: bool, limit: int, summary: bool) -> bool:
        records = self.source.records_of_user(user_id)
        accounts = [r.account_id for r in records] or self.source.files.of_user(user_id)
        self.notes()
        if not accounts:
            return False
        if recent:
            accounts = accounts[:1]
            limit = limit or RECENT_LINES
        self.say(Text.assemble(("closures of user ", "bold"), (user_id, "bold cyan"), f": {len(accounts)}"
                               + (" (the most recent)" if recent else "")))
        for account_id in accounts:
            self.say("")
            record = self.source.record(account_id)
            lines, where = self.source.lines(account_id)
            self.header(record, account_id, where)
            if summary:
                self.summary(record, account_id, lines)
            if not summary or recent:
                if recent:
                    self.say(f"last {min(limit, len(lines))} of {len(lines)} lines", "dim")
                self.print_lines(lines[-limit:] if limit > 0 else lines)
        self.flush()
        return True

    def unfinished(self) -> int:
        records = self.source.unfinished()
        self.notes()
        if self.source.store is not None:
            total = len(self.source.all_records())
            self.say(
                Text.assemble(
                    ("unfinished closures: ", "bold"), str(len(records)), (f" (of {total} in the store)", "dim")
                )
            )
            for r in records:
                lines, _ = self.source.lines(r.account_id)
                self.say(Text.assemble(
                    (f"{r.account_id}", "bold cyan"), "  user ", r.user_id, "  ", (f"{r.step}", step_style(r.step)),
                    f" ({progress_text(r)})  ", r.confirmation_code, ("  since ", "dim"), when_text(r.initiated_at),
                    ("  updated ", "dim"), when_text(r.updated_at),
                ))
                if lines:
                    self.say(Text.assemble("    ", styled(lines[-1])))
            self.flush()
            return len(records)
        # no store: closures whose log does not end completed or failed
        shown = 0
        accounts = self.source.files.accounts()
        self.say(Text.assemble(("closures in the log files: ", "bold"), str(len(accounts)),
                               (f" ({self.source.files.folder})", "dim")))
        for account_id in accounts:
            lines = self.source.files.lines(account_id)
            steps = [m.group(1) for line in lines for m in [_CURRENT_STEP.search(line)] if m]
            step = steps[-1] if steps else "unknown"
            if step in FINISHED:
                continue
            shown += 1
            self.say(Text.assemble((account_id, "bold cyan"), "  ", (step, step_style(step)), f"  {len(lines)} lines"))
            if lines:
                self.say(Text.assemble("    ", styled(lines[-1])))
        self.flush()
        return shown


# --- the command ---------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", nargs="?", help="a user id (the same as --user)")
    parser.add_argument("--account", help="one account's closure")
    parser.add_argument("--follow", "-f", action="store_true", help="with --account: print new lines until Ctrl-C")
    parser.add_argument("--user", help="a user's closures")
    parser.add_argument("--recent", action="store_true", help="with a user: the most recent closure's last lines")
    parser.add_argument("--lines", "-n", type=int, default=0, metavar="N",
                        help=f"only the last N lines (--recent: {RECENT_LINES} unless given)")
    parser.add_argument("--summary", action="store_true", help="the step, progress, transfers and history")
    parser.add_argument("--all", action="store_true", help="every unfinished closure")
    parser.add_argument("--interval", type=float, default=1.0, help="--follow: seconds between polls")


def run(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    """0 when something was shown, 1 when the account or user has no closure, 2 on a usage error."""
    console = console or Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.user and args.user_id and args.user != args.user_id:
        err.print(Text("give the user id once: positionally or with --user", "red"))
        return 2
    user = args.user or args.user_id
    targets = sum(bool(t) for t in (args.account, user, args.all))
    if targets != 1:
        err.print(Text("clera closure monitor needs exactly one of --account ID, --user ID (or USER_ID), --all", "red"))
        return 2
    if args.follow and not args.account:
        err.print(Text("--follow needs --account ID", "red"))
        return 2
    if args.lines < 0:
        err.print(Text("--lines must be 0 or more", "red"))
        return 2
    monitor = Monitor(open_source(settings), console)
    try:
        if args.all:
            monitor.unfinished()
            return 0
        if user:
            if monitor.user(user, recent=args.recent, limit=args.lines, summary=args.summary):
                return 0
            err.print(Text(f"no closure found for user {user} (looked in the closure store and in "
                           f"{monitor.source.files.folder})", "red"))
            return 1
        found, seen = monitor.account(args.account, limit=args.lines, summary=args.summary)
        if not found:
            err.print(Text(f"no closure found for account {args.account} (looked in the closure store and in "
                           f"{monitor.source.files.folder})", "red"))
            return 1
        if args.follow:
            monitor.follow(args.account, seen, args.interval)
        return 0
    except KeyboardInterrupt:
        monitor.flush()
        return 0
    except BrokenPipeError:  # `... | head`
        sys.stderr.close()
        return 0
