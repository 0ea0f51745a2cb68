"""Builds the configured `Store` (CLERA_STORE, CLERA_SCHEMA) and migrates it.

Kept apart from the `Store` port: every implementation imports the port, and the factory imports
every implementation, so neither has to import the other from inside a function.
"""

from __future__ import annotations

from brokerage.clera_store import CleraSqlStore, has_clera_tables
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from brokerage.store import Store
from engine.config import ConfigError, Settings


def store_from_settings(settings: Settings) -> Store:
    """The configured store, migrated; on PostgreSQL the layout is this project's or an existing
    Clera database's (`CLERA_SCHEMA`, `auto`: Clera's when the database has `user_onboarding`)."""
    store: Store
    if settings.store == "supabase":
        # supabase-py (and its HTTP/2 stack) is loaded only by deployments that use it
        from brokerage.clera_supabase_store import CleraSupabaseStore
        from brokerage.supabase_store import SupabaseStore

        url, key = settings.supabase_url or "", settings.supabase_service_role_key or ""
        supabase = SupabaseStore(url, key)
        clera = settings.schema == "clera" or (settings.schema == "auto" and supabase.has_table("user_onboarding"))
        store = CleraSupabaseStore(url, key) if clera else supabase
    else:
        db = Database.for_settings(settings.database_url, settings.sqlite_path)
        if settings.schema == "clera" and db.dialect != "postgres":
            raise ConfigError("CLERA_SCHEMA=clera needs PostgreSQL: set DATABASE_URL (or CLERA_STORE=supabase)")
        clera = settings.schema == "clera" or (settings.schema == "auto" and has_clera_tables(db))
        store = CleraSqlStore(db) if clera else SqlStore(db)
    store.migrate()
    return store
