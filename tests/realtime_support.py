"""Shared set-up of the realtime engine tests: a real topology on the test Ray, real Redis, real replay."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.clock import clock_from_settings
from engine.config import Settings, load_settings
from engine.feeds.replay import ReplayFeed
from engine.types import PRICE_DECIMALS, PortfolioSnapshot

# Pub/sub channels are server-wide (not per db): account ids unique to this test run keep runs
# that share the Redis server (other suites, other checkouts) from hearing each other.
RUN = uuid.uuid4().hex[:8]


def unique(name: str) -> str:
    return f"{name}-{RUN}"


def write_accounts(path: Path, accounts: list[dict]) -> None:
    path.write_text(json.dumps(accounts))


def engine_settings(redis_url: str, tmp_path: Path, accounts: list[dict], **env: str) -> Settings:
    """A replay engine in its own namespace, in session for the next ten minutes."""
    file = tmp_path / "accounts.json"
    write_accounts(file, accounts)
    values = {
        "CLERA_RAY_NAMESPACE": f"t-{uuid.uuid4().hex[:8]}",
        "REDIS_URL": redis_url,
        "CLERA_DATA_DIR": str(tmp_path),
        "CLERA_FEED": "replay",
        "CLERA_REPLAY_EPOCH": str(time.time() - 1),
        "CLERA_REPLAY_SESSION_SECONDS": "900",
        "CLERA_TICK_HZ": "5",
        "CLERA_POSITIONS": "file",
        "CLERA_DEMO_ACCOUNTS_FILE": str(file),
        "CLERA_FLUSH_MS": "20",
        "CLERA_PUBLISH_HZ": "20",
        "CLERA_IDLE_REFRESH_S": "1",
        "CLERA_SYMBOL_SHARDS": "1",
        "CLERA_PORTFOLIO_SHARDS": "2",
        # pin no symbol (an empty value would mean the default, the replay symbols): these tests
        # watch counts reach zero and the feed let go of a symbol
        "CLERA_PINNED_SYMBOLS": ",",
    }
    values.update(env)
    return load_settings(values, env_file=None)


@contextlib.contextmanager
def running_engine(settings: Settings, redis_url: str) -> Iterator:
    from actors.topology import start_topology, stop_topology

    try:
        yield start_topology(settings, redis_url)
    finally:
        stop_topology(settings)


def replay_of(settings: Settings) -> ReplayFeed:
    clock = clock_from_settings(settings)
    return ReplayFeed(clock, settings.replay_symbol_list, settings.tick_hz)


def replay_prices(feed: ReplayFeed, snap: PortfolioSnapshot) -> dict[str, tuple[float | None, float | None]]:
    """(last, previous close) the replay quotes each symbol at the snapshot's market time (4 decimals).

    With one symbol shard every replay step reaches a portfolio shard in one batch, so all the
    prices of a snapshot belong to the step at `as_of`.
    """
    day = dt.date.fromisoformat(snap.session)
    index = feed.days.index(day)
    opens, closes = feed._bounds(day)
    fraction = (snap.as_of - opens) / (closes - opens)

    def quoted(price: float | None) -> float | None:  # None: a symbol the replay does not know
        return None if price is None else float(np.round(price, PRICE_DECIMALS))

    return {
        p.symbol: (quoted(feed.price_at(p.symbol, index, fraction)), quoted(feed.prev_close(p.symbol, day)))
        for p in snap.positions
    }


def assert_replay_values(snap: PortfolioSnapshot, account: dict, feed: ReplayFeed) -> None:
    """Value and day change of a demo-file account, recomputed from the replay's own prices."""
    prices = replay_prices(feed, snap)
    qty = {p["symbol"]: float(p["qty"]) for p in account["positions"]}
    total = float(account["cash"]) + sum(q * prices[s][0] for s, q in qty.items())
    assert snap.total_value == pytest.approx(total, abs=0.006)
    assert snap.day_change == pytest.approx(sum(q * (prices[s][0] - prices[s][1]) for s, q in qty.items()), abs=0.006)


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 30.0) -> None:
    """Polls `check` (a coroutine function or a plain one) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened within {timeout}s: {what}")
