"""PositionSync: keeps the portfolio shards' holdings current.

It listens on `holdings:changed` (ids announced by whoever changed cash or positions), gathers the
ids of a short window and has the owning shards reload just those accounts from the position
source. Whenever it (re)subscribes (a start, or a lost Redis connection) it has every shard reload
everything, so a change announced while it was not listening is not lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import ray

from actors.common import Outbox, portfolio_shard_name, shared_redis_url
from actors.portfolio_shard import ids_by_shard
from brokerage.paper_stepper import LedgerStepper, ledger_stepper
from engine import pubsub
from engine.config import Settings

log = logging.getLogger(__name__)

GATHER_S = 0.05  # ids announced within this window are reloaded together


@ray.remote(num_cpus=0)
class PositionSync:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        redis_url = shared_redis_url(settings)
        self.redis = pubsub.connect(redis_url)
        self.shards = Outbox(portfolio_shard_name, settings.ray_namespace)
        self.announced = 0
        self.reloads = 0
        self._subscribed = asyncio.Event()
        self._ledger: LedgerStepper | None = None
        loop = asyncio.get_event_loop()
        self._tasks = [loop.create_task(self._run())]
        if settings.positions == "broker":
            self._tasks.append(loop.create_task(self._keep_broker_current(redis_url)))

    async def _keep_broker_current(self, redis_url: str) -> None:
        """The broker side of "holdings change without anyone asking".

        Paper: deposits land and queued orders fill when the market clock reaches them; the ledger
        stepper sleeps until the next such moment and applies it (its change hook announces the
        accounts), and plans again whenever an announcement is heard (see `_read`). Alpaca:
        fills arrive after the order call returns, so every account is re-synced on a schedule;
        the accounts are listed from the store at each re-sync, so one opened since joins then.
        """
        if self.settings.broker == "alpaca":
            while True:
                await asyncio.sleep(self.settings.alpaca_resync_s)
                try:
                    await self.reload_all()
                except Exception:
                    log.exception("scheduled re-sync from Alpaca failed")
        self._ledger = ledger_stepper(self.settings, redis_url)
        await self._ledger.run()

    async def _run(self) -> None:
        queue: asyncio.Queue[list[str]] = asyncio.Queue()
        applier = asyncio.get_event_loop().create_task(self._apply(queue))
        while True:
            try:
                subscribed = asyncio.Event()
                changes = pubsub.holdings_changes(self.redis, subscribed)
                waiter = asyncio.ensure_future(subscribed.wait())
                reader = asyncio.ensure_future(self._read(changes, queue))
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                self._subscribed.set()
                await self.reload_all()  # whatever was announced while nobody listened
                await reader
            except asyncio.CancelledError:
                applier.cancel()
                raise
            except Exception:
                log.exception("holdings listener failed; resubscribing")
                await asyncio.sleep(1.0)

    async def _read(self, changes: AsyncIterator[list[str]], queue: asyncio.Queue[list[str]]) -> None:
        async for ids in changes:
            queue.put_nowait(ids)
            if self._ledger is not None:  # a new transfer or order may be due before the planned step
                self._ledger.wake()

    async def _apply(self, queue: asyncio.Queue[list[str]]) -> None:
        while True:
            ids = set(await queue.get())
            await asyncio.sleep(GATHER_S)
            while not queue.empty():
                ids.update(queue.get_nowait())
            self.announced += len(ids)
            try:
                await self.reload(sorted(ids))
            except Exception:
                log.exception("reload of %d accounts failed", len(ids))

    async def reload(self, account_ids: list[str]) -> None:
        """Have the owning shards reload these accounts."""
        groups = ids_by_shard(account_ids, self.settings.portfolio_shards)
        await asyncio.gather(*(self.shards.call(s, "reload", ids) for s, ids in groups.items()))
        self.reloads += 1

    async def reload_all(self) -> None:
        await asyncio.gather(*(self.shards.call(s, "reload_all") for s in range(self.settings.portfolio_shards)))

    async def ready(self) -> bool:
        await self._subscribed.wait()
        return True

    async def status(self) -> dict[str, Any]:
        return {
            "announced": self.announced,
            "reloads": self.reloads,
            "listening": self._subscribed.is_set(),
            "pid": os.getpid(),
        }
