"""What a closure persists after every step, and where (the store's database: SQLite or DATABASE_URL).

The current step is always derived again from the broker's truth; the record adds what the broker
cannot tell: that this closure sent its liquidation, which withdrawals are its own, how many times a
transfer was retried, the confirmation code, and the history and log lines operators read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Literal

import msgspec
import psycopg

from brokerage.sql import Database

Step = Literal[
    "initiated",
    "canceling_orders",
    "liquidating_positions",
    "waiting_settlement",
    "withdrawing_funds",
    "partial_withdrawal_waiting",
    "closing_account",
    "completed",
    "failed",
]
FINISHED: frozenset[str] = frozenset(("completed", "failed"))
# The seed's progress numbering (GET progress): 5 steps after `initiated`.
STEP_NUMBER: dict[str, int] = {
    "initiated": 0,
    "canceling_orders": 1,
    "liquidating_positions": 1,
    "waiting_settlement": 2,
    "withdrawing_funds": 3,
    "partial_withdrawal_waiting": 3,
    "closing_account": 4,
    "completed": 5,
    "failed": -1,
}
TOTAL_STEPS = 5


class HistoryEntry(msgspec.Struct, kw_only=True):
    step: Step
    at: dt.datetime
    message: str


class ClosureTransfer(msgspec.Struct, kw_only=True):
    """A withdrawal this closure made: the broker's transfer id, the amount, its last known status."""

    id: str
    amount: Decimal
    status: str
    created_at: dt.datetime
    attempt: int = 1


class PendingWithdrawal(msgspec.Struct, kw_only=True):
    """A withdrawal about to be sent, saved before the broker call: after a crash the next pass looks
    for it at the broker (an OUTGOING transfer of this amount to this bank) before sending again."""

    amount: Decimal
    requested_at: dt.datetime


class ClosureRecord(msgspec.Struct, kw_only=True):
    account_id: str
    user_id: str
    ach_relationship_id: str
    confirmation_code: str
    step: Step = "initiated"
    initiated_at: dt.datetime
    updated_at: dt.datetime
    email: str | None = None
    owner_name: str | None = None
    # saved before the liquidation call (an intent); `liquidation_sent_at` once the broker accepted it
    liquidation_requested_at: dt.datetime | None = None
    liquidation_sent_at: dt.datetime | None = None
    liquidations: int = 0
    pending_withdrawal: PendingWithdrawal | None = None
    transfers: list[ClosureTransfer] = []
    rejected_transfers: int = 0  # withdrawals refused outright, rejected, returned or canceled
    refused_withdrawal_on: dt.date | None = None  # the banking day a withdrawal request was last refused
    completed_at: dt.datetime | None = None
    failure_reason: str | None = None
    history: list[HistoryEntry] = []

    @property
    def finished(self) -> bool:
        return self.step in FINISHED


def _ts(moment: dt.datetime) -> float:
    return moment.timestamp()


_TABLES = """
CREATE TABLE IF NOT EXISTS account_closures (
    account_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    step TEXT NOT NULL,
    initiated_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS account_closures_user_idx ON account_closures (user_id);
CREATE INDEX IF NOT EXISTS account_closures_step_idx ON account_closures (step);
CREATE TABLE IF NOT EXISTS account_closure_log (
    id {serial},
    account_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS account_closure_log_account_idx ON account_closure_log (account_id, id)
"""
COMPONENT = "account_closures"


class ClosureStore:
    """Closure records (the whole record as JSON, plus the columns queries need) and their log lines,
    in the store's database (SQLite or PostgreSQL), plus the per-closure lock `ClosureProcess` holds
    around each read-decide-act-save pass."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def migrate(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self.db.dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
        self.db.migrate(COMPONENT, [_TABLES.format(serial=serial)])

    # -- records ---------------------------------------------------------------------------------
    def get(self, account_id: str) -> ClosureRecord | None:
        row = self.db.fetchone("SELECT body FROM account_closures WHERE account_id = ?", (account_id,))
        return None if row is None else _decode(row["body"])

    def save(self, record: ClosureRecord) -> None:
        """Upserts the whole record."""
        self.db.execute(
            "INSERT INTO account_closures (account_id, user_id, step, initiated_at, updated_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET user_id = excluded.user_id,"
            " step = excluded.step, initiated_at = excluded.initiated_at, updated_at = excluded.updated_at,"
            " body = excluded.body",
            (
                record.account_id, record.user_id, record.step, _ts(record.initiated_at),
                _ts(record.updated_at), msgspec.json.encode(record).decode(),
            ),
        )

    def unfinished(self) -> list[ClosureRecord]:
        rows = self.db.fetchall(
            "SELECT body FROM account_closures WHERE step NOT IN ('completed', 'failed')"
            " ORDER BY initiated_at, account_id"
        )
        return [_decode(r["body"]) for r in rows]

    def of_user(self, user_id: str) -> list[ClosureRecord]:
        rows = self.db.fetchall(
            "SELECT body FROM account_closures WHERE user_id = ? ORDER BY initiated_at DESC, account_id",
            (user_id,),
        )
        return [_decode(r["body"]) for r in rows]

    def all(self) -> list[ClosureRecord]:
        rows = self.db.fetchall("SELECT body FROM account_closures ORDER BY initiated_at DESC, account_id")
        return [_decode(r["body"]) for r in rows]

    # -- log lines -------------------------------------------------------------------------------
    def add_log(self, account_id: str, at: dt.datetime, line: str) -> None:
        self.db.execute(
            "INSERT INTO account_closure_log (account_id, at, line) VALUES (?, ?, ?)", (account_id, _ts(at), line)
        )

    def log_lines(self, account_id: str, limit: int = 0) -> list[str]:
        """Oldest first; with `limit` > 0 only the last `limit` lines."""
        if limit > 0:
            rows = self.db.fetchall(
                "SELECT id, line FROM account_closure_log WHERE account_id = ? ORDER BY id DESC LIMIT ?",
                (account_id, int(limit)),
            )
            rows.reverse()
        else:
            rows = self.db.fetchall(
                "SELECT id, line FROM account_closure_log WHERE account_id = ? ORDER BY id", (account_id,)
            )
        return [r["line"] for r in rows]

    # -- the per-closure lock --------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, account_id: str) -> Iterator[None]:
        """Exclusive, blocking, across threads and processes, released when its holder dies.

        PostgreSQL: a session advisory lock on a connection of its own (a killed process's
        connection closes, and its lock goes with it), so a pass can commit its record writes
        while it holds the lock. SQLite lives on one machine: an `flock` on a file per closure
        beside the database (flock locks of separate opens exclude each other within a process too).
        """
        if self.db.dialect == "postgres":
            with psycopg.connect(self.db.url, autocommit=True) as conn:
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"account_closure:{account_id}",))
                try:
                    yield
                finally:
                    if not conn.closed:
                        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"account_closure:{account_id}",))
            return
        folder = Path(self.db.url.removeprefix("sqlite:///") + ".closure-locks")
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in account_id)
        fd = os.open(folder / f"{safe}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def _decode(body: str | bytes) -> ClosureRecord:
    return msgspec.json.decode(body, type=ClosureRecord)
