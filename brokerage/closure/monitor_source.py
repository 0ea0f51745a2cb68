"""Where `clera closure monitor` reads closures: the closure store (the store's database, which every
node writes), else this machine's log files `CLERA_DATA_DIR/logs/account_closures/closure_{account}_{timestamp}.log`.
The monitor only reads: it never creates a database or a table."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg

from brokerage.closure.records import ClosureRecord, ClosureStore
from brokerage.sql import Database
from engine.config import Settings

LOG_SUBDIR = ("logs", "account_closures")
T = TypeVar("T")
_FILE_NAME = re.compile(r"^closure_(?P<account>.+)_(?P<stamp>\d{8}_\d{6})\.log$")


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


@dataclass
class Source:
    """The closure store (None when there is none to read) with the log files as the fallback."""

    store: ClosureStore | None
    files: LogFiles
    notes: list[str] = field(default_factory=list)

    def _guard(self, read: Callable[[ClosureStore], T], default: T) -> T:
        if self.store is None:
            return default
        try:
            return read(self.store)
        except (
            sqlite3.Error,
            psycopg.Error,
            OSError,
        ) as exc:  # no table yet, a locked or unreachable database: use the files
            self.notes.append(f"closure store not readable ({type(exc).__name__}: {exc}); using log files")
            self.store = None
            return default

    def record(self, account_id: str) -> ClosureRecord | None:
        return self._guard(lambda store: store.get(account_id), None)

    def records_of_user(self, user_id: str) -> list[ClosureRecord]:
        return self._guard(lambda store: store.of_user(user_id), [])

    def unfinished(self) -> list[ClosureRecord]:
        return self._guard(lambda store: store.unfinished(), [])

    def all_records(self) -> list[ClosureRecord]:
        return self._guard(lambda store: store.all(), [])

    def lines(self, account_id: str) -> tuple[list[str], str]:
        """Every line of the account's closures, oldest first, and where they came from."""
        stored: list[str] = self._guard(lambda store: store.log_lines(account_id), [])
        if stored:
            return stored, "closure store"
        return self.files.lines(account_id), f"log files in {self.files.folder}"


def open_source(settings: Settings) -> Source:
    """The store of `settings` if it exists (never created here), and the log folder under CLERA_DATA_DIR."""
    files = LogFiles(settings.data_path.joinpath(*LOG_SUBDIR))
    if not settings.database_url and not settings.sqlite_path.is_file():
        return Source(None, files)
    return Source(ClosureStore(Database.for_settings(settings.database_url, settings.sqlite_path)), files)
