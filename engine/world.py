"""The paper world `clera serve` keeps in CLERA_DATA_DIR: where its replayed market stands, and its files.

The replay clock is a pure function of wall time and an epoch. Taking a new epoch at every start
rewound the market to CLERA_REPLAY_START while the ledger kept the days it had already lived, so a
restarted demo's "now" lay before its own history. The market time reached is therefore saved
beside the ledger, and a restart picks the epoch at which the clock shows that moment at once.

While the world runs the saved moment is kept `LEAD_S` of wall time ahead of the clock: a run that is
killed without a clean stop resumes up to that much later, never earlier. A clean stop saves the exact
moment. The ledger's newest record is a floor as well, so a world saved by nothing (or by an older
version) never resumes before its own history either.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

import msgspec

from engine.clock import ReplayClock
from engine.config import ConfigError, Settings

POSITION_FILE = "replay-position.json"
WORLD_FOLDERS = ("logs", "outbox")  # closure logs and emails written to files
LEAD_S = 2.0
SAVE_EVERY_S = 1.0
# An epoch near 2e9 is a float good to ~0.2 us, which a replayed night stretches to tens of market
# microseconds: a resume lands this much wall time later so that rounding never puts it earlier.
RESUME_SLACK_S = 0.001


class SavedPosition(msgspec.Struct, frozen=True):
    market_time: dt.datetime  # the replayed moment the world reached (aware, UTC)
    saved_at: dt.datetime  # wall time of the save, for a person reading the file


def position_path(settings: Settings) -> Path:
    return settings.data_path / POSITION_FILE


def saved_moment(settings: Settings) -> dt.datetime | None:
    """The market time the persisted world reached; None for a world that never saved one."""
    path = position_path(settings)
    if not path.is_file():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=SavedPosition).market_time
    except msgspec.DecodeError as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}): remove it, or start a new world with `clera serve --fresh`"
        ) from None


def save_moment(settings: Settings, moment: dt.datetime) -> None:
    """Written whole or not at all (a rename), so a crash mid-write leaves the previous position."""
    path = position_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    record = SavedPosition(market_time=moment, saved_at=dt.datetime.now(dt.UTC))
    partial.write_bytes(msgspec.json.encode(record))
    os.replace(partial, path)


def resume_epoch(settings: Settings, floor: dt.datetime | None, now: float) -> tuple[float, dt.datetime | None]:
    """(CLERA_REPLAY_EPOCH for a start at wall time `now`, the moment the world resumes at or None).

    The world resumes at the later of its saved moment and `floor` (the ledger's newest record);
    a world with neither starts at CLERA_REPLAY_START now. A moment before that start's first open
    (CLERA_REPLAY_START moved later) also starts there: time still only moves forward."""
    reached = max((m for m in (saved_moment(settings), floor) if m is not None), default=None)
    if reached is None:
        return now, None
    at_zero = ReplayClock(settings.replay_start, settings.replay_session_seconds, 0.0, settings.replay_open_fraction)
    return now - at_zero.wall_time_at(reached) - RESUME_SLACK_S, reached


class PositionKeeper:
    """Saves the clock's moment (`LEAD_S` ahead) every `SAVE_EVERY_S` on a thread, the exact one on `close`."""

    def __init__(self, settings: Settings, clock: ReplayClock) -> None:
        self._settings = settings
        self._clock = clock
        self._ahead = clock.ahead(LEAD_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-position", daemon=True)

    def start(self) -> None:
        save_moment(self._settings, self._ahead.now())
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAVE_EVERY_S):
            save_moment(self._settings, self._ahead.now())

    def close(self) -> None:
        """Call once nothing writes the ledger any more: the world stops at this moment."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        save_moment(self._settings, self._clock.now())


def world_entries(settings: Settings, databases: Iterable[str]) -> list[Path]:
    """What `clera serve --fresh` removes: each SQLite database of the world with the files named after it
    (`-wal`, `-shm`, `.closure-locks`), the closure logs, the outbox and the replay position. The dev
    secrets stay, so printed keys and tokens keep working; nothing else in the folder is touched."""
    folder = settings.data_path
    found = [p for name in databases for p in sorted(folder.glob(f"{name}*"))]
    found += [folder / name for name in (*WORLD_FOLDERS, POSITION_FILE) if (folder / name).exists()]
    return found


def remove(entries: Iterable[Path]) -> None:
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
