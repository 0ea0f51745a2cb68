"""Where `clera serve` starts the paper world: a new one (`--fresh`), or the persisted one continued
at the market time it stopped."""

from __future__ import annotations

import time

from agents.memory import CHECKPOINT_FILE
from brokerage.paper import newest_record
from brokerage.sql import Database
from clera_cli import console
from clera_cli.watch_view import market_time
from engine import world
from engine.config import Settings


def fresh_world(settings: Settings) -> bool:
    """`--fresh`: says so, then removes the old world's files (never without the flag); False if it cannot."""
    if settings.database_url or settings.store == "supabase":
        console.print("[red]--fresh removes the paper world kept in CLERA_DATA_DIR, but this one's ledger or store is "
                      "in DATABASE_URL / Supabase, which clera does not empty: clear those tables yourself and start "
                      "without --fresh[/red]")
        return False
    entries = world.world_entries(settings, [settings.sqlite_path.name, CHECKPOINT_FILE])
    names = ", ".join(e.name for e in entries) or "nothing to remove"
    console.print(f"--fresh: starting a new paper world; the old one in {settings.data_path} goes ({names})",
                  soft_wrap=True)
    world.remove(entries)
    return True


def resume_epoch(settings: Settings) -> float:
    """The replay epoch that continues the persisted world where it stopped (its saved market time, never
    before the ledger's newest record), or that starts a new one at CLERA_REPLAY_START now."""
    floor = None
    if settings.broker == "paper":
        db = Database.for_settings(settings.database_url, settings.sqlite_path)
        try:
            floor = newest_record(db)
        finally:
            db.close()
    epoch, reached = world.resume_epoch(settings, floor, time.time())
    if reached is None:
        console.print(f"a new paper world: the replay starts at {settings.replay_start.isoformat()}")
    else:
        console.print(f"continuing the paper world at {market_time(reached.timestamp())} "
                      "(`clera serve --fresh` starts a new one)")
    return epoch
