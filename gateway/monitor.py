"""Background view of the gateway's dependencies, so health routes answer from memory.

Health checks are hit often by load balancers; they must not each ping Redis or call Ray actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.services import EngineState, Services

log = logging.getLogger("clera.gateway")


class HealthMonitor:
    def __init__(self, services: Services, interval_s: float = 5.0) -> None:
        self._services = services
        self._interval_s = interval_s
        self.started_at = time.time()
        self.redis_ok: bool | None = None
        self.engine = EngineState()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check_once(self) -> None:
        try:
            await asyncio.wait_for(self._services.redis.client().ping(), timeout=self._interval_s)
            self.redis_ok = True
        except Exception:  # noqa: BLE001 - any failure means "not reachable" for the health answer
            self.redis_ok = False
        try:
            self.engine = await asyncio.wait_for(self._services.engine.refresh(), timeout=self._interval_s)
        except Exception as exc:  # noqa: BLE001 - an engine that cannot answer is reported down, not raised
            self.engine = EngineState(state="down", checked_at=time.time(), detail={"error": type(exc).__name__})

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check_once()
