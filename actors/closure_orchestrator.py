"""ClosureOrchestrator: keeps every unfinished account closure moving, as Ray tasks on the cluster.

A thin shell around `brokerage.closure.process.ClosureProcess`: every `CLERA_CLOSURE_WAKE_S` wall
seconds it asks the process which closures are unfinished and runs `advance` for each as a Ray
task. The step itself is one idempotent pass (it reads the broker's state, then acts), so a task is
retried when its worker or node dies (system failures only: an error the step raised is the
closure's to record, not ours to repeat). The actor never runs two advances of one closure at the
same time, and it keeps no state of its own: after a restart (it is detached and restarts without
limit) it finds the same unfinished closures in the store and carries on.

The market clock is the replayed one in the demo (`clock_from_settings`: a replayed day per
`CLERA_REPLAY_SESSION_SECONDS`), which every process derives alike, so settlement and transfer
completion happen as the replay moves, whichever worker runs the step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import msgspec
import ray

from actors import placement
from actors.common import lookup, setup_process
from brokerage.closure.process import ClosureProcess
from brokerage.closure.records import ClosureStore
from brokerage.closure.steps import STEP_NAMES
from brokerage.email import mailer_from_settings
from brokerage.factory import process_broker
from brokerage.sql import Database
from brokerage.store_factory import store_from_settings
from engine import metrics
from engine.clock import clock_from_settings
from engine.config import Settings

log = logging.getLogger(__name__)

TASK_RETRIES = 3  # a step's task runs again when its worker dies (never when the step itself raised)
ORCHESTRATOR_OPTIONS: dict[str, Any] = {
    "lifetime": "detached",
    "max_restarts": -1,
    "max_task_retries": 2,
    "num_cpus": 0,
}


def orchestrator_name() -> str:
    return "clera.closure_orchestrator"


def closure_process(settings: Settings) -> ClosureProcess:
    """The closure process every Ray worker builds alike from the shared settings: the configured broker
    on the shared market clock, the store, the closure records beside the store, the configured mailer."""
    redis_url = settings.redis_external_url
    if not redis_url:
        raise RuntimeError("account closure on Ray needs REDIS_URL (prices and holdings announcements)")
    records = ClosureStore(Database.for_settings(settings.database_url, settings.sqlite_path))
    records.migrate()
    return ClosureProcess(
        process_broker(settings, redis_url), records, store_from_settings(settings), clock_from_settings(settings),
        mailer_from_settings(settings), settings,
    )


_processes: dict[bytes, ClosureProcess] = {}


def _process_for(settings: Settings) -> ClosureProcess:
    key = msgspec.json.encode(settings)
    process = _processes.get(key)
    if process is None:
        setup_process(settings)
        process = _processes[key] = closure_process(settings)
    return process


@ray.remote(num_cpus=0, max_retries=TASK_RETRIES, retry_exceptions=False)
def closure_call(settings: Settings, method: str, args: tuple[Any, ...]) -> Any:
    """One ClosureProcess call as a Ray task (the gateway's calls and the orchestrator's steps)."""
    return getattr(_process_for(settings), method)(*args)


@ray.remote(num_cpus=0, max_retries=TASK_RETRIES, retry_exceptions=False)
def advance_closure(settings: Settings, account_id: str) -> str:
    """One idempotent pass of one closure; answers the step it is at afterwards."""
    return _process_for(settings).advance(account_id).step


@ray.remote(num_cpus=0)
class ClosureOrchestrator:
    def __init__(self, settings: Settings) -> None:
        setup_process(settings)
        self.settings = settings
        self.started_at = time.time()
        self.wakes = 0
        self.advanced = 0
        self.failed = 0
        self.last_steps: dict[str, str] = {}
        self.unfinished: list[str] = []
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # Steps are zero-CPU tasks (they wait on the broker and the database), so Ray would start a
        # worker for each one in flight: a thousand closures would be a thousand processes and
        # database connections. Two per CPU of the cluster run at once; the rest wait their turn.
        self._slots = asyncio.Semaphore(max(2, 2 * int(ray.cluster_resources().get("CPU", 1))))
        self._task = asyncio.get_event_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self._wake_once()
            except Exception:
                log.exception("listing unfinished closures failed; trying again at the next wake")
            await asyncio.sleep(self.settings.closure_wake_s)

    async def _wake_once(self) -> int:
        """Start an advance for every unfinished closure that has none running; the number started."""
        self.wakes += 1
        account_ids: list[str] = await closure_call.remote(self.settings, "unfinished", ())
        self.unfinished = account_ids
        self._count_steps()
        started = 0
        for account_id in account_ids:
            if account_id not in self._inflight:
                self._inflight[account_id] = asyncio.get_running_loop().create_task(self._advance(account_id))
                started += 1
        return started

    def _count_steps(self) -> None:
        """The unfinished closures by the step each was at after its last pass (`initiated` before any)."""
        counts = dict.fromkeys(STEP_NAMES, 0)
        for account_id in self.unfinished:
            counts[self.last_steps.get(account_id, "initiated")] += 1
        for step, count in counts.items():
            metrics.sink().record(metrics.CLOSURES, count, {"step": step})

    async def _advance(self, account_id: str) -> None:
        try:
            async with self._slots:
                self.last_steps[account_id] = await advance_closure.remote(self.settings, account_id)
            self.advanced += 1
        except Exception as exc:  # noqa: BLE001 - the step raised (recorded by the process) or its retries ran out
            self.failed += 1
            log.warning("advancing the closure of %s failed: %s", account_id, exc, extra={"account_id": account_id})
        finally:
            self._inflight.pop(account_id, None)

    async def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "wakes": self.wakes,
            "advanced": self.advanced,
            "failed": self.failed,
            "running": sorted(self._inflight),
            "unfinished": list(self.unfinished),
            "last_steps": dict(self.last_steps),
        }


def start_orchestrator(settings: Settings) -> Any:
    """Get or create the named detached orchestrator in the settings' namespace."""
    # @ray.remote makes the class an ActorClass; Ray's annotations keep the plain class, without `options`
    return ClosureOrchestrator.options(  # type: ignore[attr-defined]
        name=orchestrator_name(), namespace=settings.ray_namespace, get_if_exists=True,
        **next(placement.spread(placement.AGENTS)), **ORCHESTRATOR_OPTIONS,
    ).remote(settings)


def get_orchestrator(settings: Settings) -> Any:
    return lookup(orchestrator_name(), settings.ray_namespace)


def stop_orchestrator(settings: Settings) -> None:
    """Kill the orchestrator for good (tests and benchmarks); unfinished closures wait in the store."""
    handle = get_orchestrator(settings)
    if handle is not None:
        ray.kill(handle, no_restart=True)
