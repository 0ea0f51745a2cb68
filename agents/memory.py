"""The conversation checkpointer: SQLite in CLERA_DATA_DIR by default, PostgreSQL with DATABASE_URL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from engine.config import Settings

CHECKPOINT_FILE = "chat-checkpoints.db"


@contextlib.asynccontextmanager
async def checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """An async saver, set up, for as long as the context is open (it holds one connection)."""
    if settings.database_url:
        async with AsyncPostgresSaver.from_conn_string(settings.database_url) as saver:
            await saver.setup()
            yield saver
        return
    settings.data_path.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(settings.data_path / CHECKPOINT_FILE)) as saver:
        await saver.setup()
        yield saver
