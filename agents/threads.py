"""Who owns each conversation: a thread belongs to one user and one account, for good.

Kept in the store's database (the SQLite file or `DATABASE_URL`) beside the accounts it points at,
so a thread's owner is known on every node; the conversation itself is in the checkpointer.
"""

from __future__ import annotations

import time

import msgspec

from brokerage.sql import Database

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS chat_threads ("
    " thread_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, account_id TEXT NOT NULL, title TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX IF NOT EXISTS chat_threads_owner ON chat_threads (user_id, account_id, updated_at)",
]
TITLE_CHARS = 80


class ThreadRecord(msgspec.Struct, kw_only=True):
    thread_id: str
    user_id: str
    account_id: str
    title: str
    created_at: float
    updated_at: float


class ThreadRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def migrate(self) -> None:
        self.db.migrate("chat_threads", SCHEMA)

    def create(self, thread_id: str, user_id: str, account_id: str, first_message: str) -> ThreadRecord:
        now = time.time()
        title = " ".join(first_message.split())[:TITLE_CHARS] or "New conversation"
        self.db.execute(
            "INSERT INTO chat_threads (thread_id, user_id, account_id, title, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (thread_id, user_id, account_id, title, now, now),
        )
        return ThreadRecord(
            thread_id=thread_id, user_id=user_id, account_id=account_id, title=title, created_at=now, updated_at=now
        )

    def get(self, thread_id: str) -> ThreadRecord | None:
        row = self.db.fetchone("SELECT * FROM chat_threads WHERE thread_id = ?", (thread_id,))
        return None if row is None else msgspec.convert(row, ThreadRecord)

    def touch(self, thread_id: str) -> None:
        self.db.execute("UPDATE chat_threads SET updated_at = ? WHERE thread_id = ?", (time.time(), thread_id))

    def of(self, user_id: str, account_id: str) -> list[ThreadRecord]:
        """The person's threads on one account, most recently used first."""
        rows = self.db.fetchall(
            "SELECT * FROM chat_threads WHERE user_id = ? AND account_id = ? ORDER BY updated_at DESC, thread_id",
            (user_id, account_id),
        )
        return [msgspec.convert(r, ThreadRecord) for r in rows]
