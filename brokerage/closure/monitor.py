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
import datetime as dt
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from brokerage.closure.records import FINISHED, STEP_NUMBER, TOTAL_STEPS, ClosureRecord

if TYPE_CHECKING:
    from engine.config import Settings

LOG_SUBDIR = ("logs", "account_closures")
RECENT_LINES = 20
_FILE_NAME = re.compile(r"^closure_(?P<account>.+)_(?P<stamp>\d{8}_\d{6})\.log$")
_PREFIX = re.compile(r"^(\[[^\]]*\]\s?)")
_CURRENT_STEP = re.compile(r"Current Step: (\w+)")

# --- colours ----------------------------------------------------------------------------------
_RED_ICONS = ("❌", "🚨", "💥", "🛑")
_YELLOW_ICONS = ("⚠", "🔁", "⏳")
_CYAN_ICONS = ("📧", "✉")
_MAGENTA_ICONS = ("⏱", "⌛")
_GREEN_ICONS = ("✅", "🎉")
_RED_WORDS = re.compile(r"\b(FAILED|FAILURE|ERROR|EXCEPTION|CRITICAL)\b|Current Step: failed")
_YELLOW_WORDS = re.compile(r"\b(WARNING|WARN|RETRY|RETRYING|RETRIED|REJECTED|RETURNED)\b|\bretry", re.IGNORECASE)
_GREEN_WORDS = re.compile(r"\b(PASSED|COMPLETED|SUCCESS|SUCCEEDED)\b|Current Step: completed")


def line_style(line: str) -> str:
    """The colour of one log line: by its leading icon, else by the icons and keywords it contains."""
    body = _PREFIX.sub("", line, count=1).lstrip()
    if _RED_WORDS.search(body) or any(i in body for i in _RED_ICONS):
        return "red"  # a failed email or safety check is a failure before it is an email or a check
    if body.startswith(_YELLOW_ICONS):
        return "yellow"
    if body.startswith(_CYAN_ICONS):
        return "cyan"
    if body.startswith(_MAGENTA_ICONS):
        return "magenta"
    if body.startswith(_GREEN_ICONS):
        return "green"
    if _YELLOW_WORDS.search(body):
        return "yellow"
    if _GREEN_WORDS.search(body) or any(i in body for i in _GREEN_ICONS):
        return "green"
    return "blue"


def styled(line: str) -> Text:
    text = Text()
    prefix = _PREFIX.match(line)
    if prefix:
        text.append(prefix.group(1), style="dim")
        line = line[prefix.end():]
    text.append(line, style=line_style(line))
    return text


# --- the log files --------------------------------------------------------------------------
@dataclass
class LogFiles:
    """This machine's closure log files: `closure_{account}_{YYYYmmdd_HHMMSS}.log`."""

    folder: Path

    def accounts(self) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("closure_*.log"), key=lambda p: _FILE_NAME.sub(r"\2", p.name)):
                match = _FILE_NAME.match(path.name)
                if match:
                    found.setdefault(match["account"], []).append(path)
        return found

    def of_account(self, account_id: str) -> list[Path]:
        """Oldest first (a resumed closure appends to its file; a second closure has a file of its own)."""
        return self.accounts().get(account_id, [])

    def lines(self, account_id: str) -> list[str]:
        lines: list[str] = []
        for path in self.of_account(account_id):
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        return lines

    def of_user(self, user_id: str) -> list[str]:
        """Accounts whose log mentions the user id (the files are named by account only)."""
        return [
            account for account, paths in self.accounts().items()
            if any(user_id in p.read_text(encoding="utf-8", errors="replace") for p in paths)
        ]


# --- what the monitor reads -------------------------------------------------------------------
@dataclass
class Source:
    """The closure store (None when there is none to read) with the log files as the fallback."""

    store: object | None  # ClosureStore
    files: LogFiles
    notes: list[str] = field(default_factory=list)

    def _guard(self, read: Callable[[], object], default: object) -> object:
        if self.store is None:
            return default
        import psycopg

        try:
            return read()
        except (
            sqlite3.Error,
            psycopg.Error,
            OSError,
        ) as exc:  # no table yet, a locked or unreachable database: use the files
            self.notes.append(f"closure store not readable ({type(exc).__name__}: {exc}); using log files")
            self.store = None
            return default

    # The readers below: `store` is typed `object` (its class loads only with a store to read) and `_guard`
    # answers `object`; each lambda runs only when the store is set, and answers what its method says.
    def record(self, account_id: str) -> ClosureRecord | None:
        return self._guard(lambda: self.store.get(account_id), None)  # type: ignore[union-attr,return-value]

    def records_of_user(self, user_id: str) -> list[ClosureRecord]:
        return self._guard(lambda: self.store.of_user(user_id), [])  # type: ignore[union-attr,return-value]

    def unfinished(self) -> list[ClosureRecord]:
        return self._guard(lambda: self.store.unfinished(), [])  # type: ignore[union-attr,return-value]

    def all_records(self) -> list[ClosureRecord]:
        return self._guard(lambda: self.store.all(), [])  # type: ignore[union-attr,return-value]

    def lines(self, account_id: str) -> tuple[list[str], str]:
        """Every line of the account's closures, oldest first, and where they came from."""
        stored: list[str] = self._guard(lambda: self.store.log_lines(account_id), [])  # type: ignore[union-attr,assignment]
        if stored:
            return stored, "closure store"
        return self.files.lines(account_id), f"log files in {self.files.folder}"


def open_source(settings: Settings) -> Source:
    """The store of `settings` if it exists (never created here), and the log folder under CLERA_DATA_DIR."""
    from brokerage.closure.records import ClosureStore
    from brokerage.sql import Database

    files = LogFiles(settings.data_path.joinpath(*LOG_SUBDIR))
    database_url = settings.database_url
    if not database_url and not settings.sqlite_path.is_file():
        return Source(None, files)
    return Source(ClosureStore(Database.for_settings(database_url, settings.sqlite_path)), files)


# --- rendering --------------------------------------------------------------------------------
def _when(at: dt.datetime | None) -> str:
    if at is None:
        return "-"
    if at.tzinfo is not None:
        return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _withdrawn(record: ClosureRecord) -> Decimal:
    return sum((t.amount for t in record.transfers if t.status == "COMPLETE"), Decimal(0))


def _bar(number: int) -> str:
    done = max(0, min(number, TOTAL_STEPS))
    return "█" * (done * 4) + "░" * ((TOTAL_STEPS - done) * 4)


def progress_text(record: ClosureRecord) -> str:
    number = STEP_NUMBER.get(record.step, 0)
    return "failed" if number < 0 else f"step {number}/{TOTAL_STEPS}"


def step_style(step: str) -> str:
    return {"completed": "green", "failed": "red"}.get(
        step, "yellow" if step == "partial_withdrawal_waiting" else "blue"
    )


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
            ("progress", Text.assemble((_bar(number), step_style(record.step)), f" {max(number, 0)}/{TOTAL_STEPS}")),
            ("confirmation", record.confirmation_code),
            ("initiated", _when(record.initiated_at)),
            ("updated", _when(record.updated_at)),
        ]
        if record.completed_at is not None:
            rows.append(("completed", _when(record.completed_at)))
        if record.transfers:
            rows.append(
                (
                    "withdrawn",
                    f"${_withdrawn(record):,.2f} in {sum(t.status == 'COMPLETE' for t in record.transfers)}"
                    f" completed of {len(record.transfers)} transfers",
                )
            )
            for t in record.transfers:
                style = {"COMPLETE": "green", "REJECTED": "red", "RETURNED": "red", "CANCELED": "red"}.get(
                    t.status, "yellow"
                )
                rows.append(("  transfer", Text.assemble(f"{t.id} ${t.amount:,.2f} ", (t.status, style),
                                                         f" attempt {t.attempt} {_when(t.created_at)}")))
        if record.failure_reason:
            rows.append(("failure", Text(record.failure_reason, "red")))
        rows.append(("log lines", str(len(lines))))
        for label, value in rows:
            self.say(Text.assemble((f"{label:<13}", "dim"), value))
        if record.history:
            self.say(Text("history", "dim"))
            for entry in record.history:
                self.say(Text.assemble(f"  {_when(entry.at)}  ", (f"{entry.step:<27}", step_style(entry.step)),
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
                    f" ({progress_text(r)})  ", r.confirmation_code, ("  since ", "dim"), _when(r.initiated_at),
                    ("  updated ", "dim"), _when(r.updated_at),
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
