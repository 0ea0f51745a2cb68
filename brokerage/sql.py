"""A small SQL layer shared by the store and the paper ledger: SQLite (a file) or PostgreSQL.

Queries are written once with `?` placeholders and run on either engine. On SQLite each thread has
its own connection (sqlite3's are not to be shared across threads); on PostgreSQL a psycopg_pool pool
lends a connection per statement, or per transaction to the thread that opened it. A write
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
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolClosed
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_incrementing

# What a database that cannot be reached (or is locked past its timeout) raises: callers answer 503.
DATABASE_DOWN = (sqlite3.OperationalError, psycopg.OperationalError)
# A constraint refused the write (a unique index settling a race, for one).
INTEGRITY = (sqlite3.IntegrityError, psycopg.IntegrityError)

Row = dict[str, Any]
# PostgreSQL connections per Database and process, lent per statement or per transaction; a statement
# waits this long for one (all lent out, or the server being reconnected) before DATABASE_DOWN.
POOL_MAX_SIZE = 10
POOL_WAIT_S = 10.0
_PLACEHOLDER = re.compile(r"\?")


# Two SQLite steps meet "database is locked": switching to WAL fails at once rather than waiting
# (several processes opening a new file together, as every replica migrates on start), and taking
# the write lock can still fail past the busy timeout. Each is tried again, a little later each
# time; the last try raises what it meets. PostgreSQL raises no sqlite3 error: tried once.
_SQLITE_LOCKED = retry_if_exception_type(sqlite3.OperationalError)


@retry(stop=stop_after_attempt(41), wait=wait_incrementing(0.01, 0.01), retry=_SQLITE_LOCKED, reraise=True)
def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so)."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode=WAL")


@retry(stop=stop_after_attempt(51), wait=wait_incrementing(0.05, 0.05), retry=_SQLITE_LOCKED, reraise=True)
def _begin(conn: Any, statement: str) -> None:
    conn.execute(statement)


class Database:
    """One logical database; `url` is `sqlite:///path` or `postgresql://...`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = "postgres" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
        self._local = threading.local()  # this thread's SQLite connection and open transaction
        self._pool: ConnectionPool[psycopg.Connection[DictRow]] | None = None
        self._pool_lock = threading.Lock()
        if self.dialect == "sqlite":
            self._path = url.removeprefix("sqlite:///")
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_settings(cls, database_url: str | None, sqlite_path: Path) -> Database:
        return cls(database_url or f"sqlite:///{sqlite_path}")

    # -- connections -------------------------------------------------------------------------
    def _sqlite(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            _use_wal(conn)
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[DictRow]]:
        with self._pool_lock:
            if self._pool is None:
                # The pool would wait out its timeout for a server that is not there: one connection
                # of our own first fails at once, with the server's own error.
                psycopg.connect(self.url).close()
                self._pool = ConnectionPool(
                    self.url, connection_class=psycopg.Connection[DictRow],
                    kwargs={"autocommit": True, "row_factory": dict_row},
                    min_size=1, max_size=POOL_MAX_SIZE, timeout=POOL_WAIT_S, open=True,
                )
            return self._pool

    @contextlib.contextmanager
    def _lent(self) -> Iterator[psycopg.Connection[DictRow]]:
        while True:
            pool = self._open_pool()
            try:
                conn = pool.getconn()
            except PoolClosed:  # another thread's close() came in between: a new pool serves this one
                continue
            break
        try:
            yield conn
        finally:
            pool.putconn(conn)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """The open transaction's connection, else this thread's SQLite one, else one the pool lends
        for this statement."""
        held = getattr(self._local, "tx", None)
        if held is not None:
            yield held
        elif self.dialect == "sqlite":
            yield self._sqlite()
        else:
            with self._lent() as conn:
                yield conn

    def close(self) -> None:
        """Closes this thread's SQLite connection, or the pool's PostgreSQL connections (one lent out
        closes when it is returned); a later statement opens what it needs again."""
        if self.dialect == "sqlite":
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
                self._local.conn = None
            return
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- statements --------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return _PLACEHOLDER.sub("%s", sql) if self.dialect == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        with self._connection() as conn:
            rowcount: int = conn.execute(self._sql(sql), tuple(params)).rowcount
            return rowcount

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._connection() as conn:
            return [dict(r) for r in conn.execute(self._sql(sql), tuple(params)).fetchall()]

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self._connection() as conn:
            row = conn.execute(self._sql(sql), tuple(params)).fetchone()
            return dict(row) if row is not None else None

    def for_update(self) -> str:
        """Suffix that row-locks a SELECT inside a transaction (SQLite locks the whole file instead)."""
        return " FOR UPDATE" if self.dialect == "postgres" else ""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction on one connection, held by this thread: all or nothing. Nested use
        joins the outer transaction."""
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield self
            finally:
                self._local.depth -= 1
            return
        with self._connection() as conn:
            _begin(conn, "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
            self._local.tx, self._local.depth = conn, 1
            try:
                yield self
            except BaseException:
                self._local.tx, self._local.depth = None, 0
                conn.execute("ROLLBACK")
                raise
            self._local.tx, self._local.depth = None, 0
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
