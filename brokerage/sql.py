"""A small SQL layer shared by the store and the paper ledger: SQLite (a file) or PostgreSQL.

Queries are written once with `?` placeholders and run on either engine. Each thread gets its own
connection (sqlite3 and psycopg connections are not to be shared across threads). A write
transaction is serialised per database on SQLite (`BEGIN IMMEDIATE`) and uses row locks on
PostgreSQL (`for_update()`), which is what keeps concurrent requests from overdrawing an account.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

# What a database that cannot be reached (or is locked past its timeout) raises: callers answer 503.
DATABASE_DOWN = (sqlite3.OperationalError, psycopg.OperationalError)
# A constraint refused the write (a unique index settling a race, for one).
INTEGRITY = (sqlite3.IntegrityError, psycopg.IntegrityError)

Row = dict[str, Any]
_PLACEHOLDER = re.compile(r"\?")


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so). Switching takes an exclusive lock and, unlike other
    statements, fails at once with "database is locked" rather than waiting for it, which happens
    when several processes open a new file together (every replica migrates on start): retried."""
    for attempt in range(40):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            time.sleep(0.01 * (attempt + 1))
    conn.execute("PRAGMA journal_mode=WAL")  # the last try raises what it meets


class Database:
    """One logical database; `url` is `sqlite:///path` or `postgresql://...`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = "postgres" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
        self._local = threading.local()
        if self.dialect == "sqlite":
            self._path = url.removeprefix("sqlite:///")
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_settings(cls, database_url: str | None, sqlite_path: Path) -> Database:
        return cls(database_url or f"sqlite:///{sqlite_path}")

    # -- connections -------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            _use_wal(conn)
            conn.execute("PRAGMA foreign_keys=ON")
            return conn
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or (self.dialect == "postgres" and conn.closed):
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- statements --------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return _PLACEHOLDER.sub("%s", sql) if self.dialect == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        cur = self._conn().execute(self._sql(sql), tuple(params))
        changed: int = cur.rowcount  # sqlite3's and psycopg's cursors differ in type, not in this
        return changed

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self._conn().execute(self._sql(sql), tuple(params))
        return [dict(r) for r in cur.fetchall()]

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        cur = self._conn().execute(self._sql(sql), tuple(params))
        row = cur.fetchone()
        return dict(row) if row is not None else None

    def for_update(self) -> str:
        """Suffix that row-locks a SELECT inside a transaction (SQLite locks the whole file instead)."""
        return " FOR UPDATE" if self.dialect == "postgres" else ""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction: all or nothing. Nested use joins the outer transaction."""
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield self
            finally:
                self._local.depth -= 1
            return
        conn = self._conn()
        begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"
        for attempt in range(50):
            try:
                conn.execute(begin)
                break
            except sqlite3.OperationalError:  # database is locked beyond busy_timeout
                time.sleep(0.05 * (attempt + 1))
        else:
            conn.execute(begin)
        self._local.depth = 1
        try:
            yield self
        except BaseException:
            self._local.depth = 0
            conn.execute("ROLLBACK")
            raise
        self._local.depth = 0
        conn.execute("COMMIT")

    # -- migrations --------------------------------------------------------------------------
    def migrate(self, component: str, steps: Sequence[str]) -> int:
        """Apply `steps[i]` (one or more `;`-separated statements) for every version not yet applied.

        Versions are per component, so the store and the ledger evolve independently in one
        database. Returns the schema version reached.
        """
        with self.transaction():
            if self.dialect == "postgres":  # serialise concurrent migrators (of every component) across processes
                self.execute("SELECT pg_advisory_xact_lock(hashtext('schema_migrations'))")
            self.execute(  # inside the lock: two racing CREATE TABLE IF NOT EXISTS collide in PostgreSQL's catalog
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at DOUBLE PRECISION NOT NULL,"
                " PRIMARY KEY (component, version))"
            )
            row = self.fetchone(
                "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations WHERE component = ?", (component,)
            )
            current = int(row["v"]) if row else 0
            for version, step in enumerate(steps, start=1):
                if version <= current:
                    continue
                # a PostgreSQL `DO $$ ... $$` block holds `;` of its own: it is sent whole
                statements = [step] if "$$" in step else step.split(";")
                for statement in (s.strip() for s in statements):
                    if statement:
                        self.execute(statement)
                self.execute(
                    "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                    (component, version, time.time()),
                )
        return len(steps)
