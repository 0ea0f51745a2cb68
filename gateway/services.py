"""The few services the gateway's routes need, as small interfaces with in-process implementations.

`serve_app` swaps in Ray-backed ones (a broker that runs calls as Ray tasks, engine health from the
topology); tests and the benchmark build the same app with these and run it under plain uvicorn.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

import msgspec
import redis.asyncio as aioredis

from brokerage import models
from brokerage.broker import Broker
from brokerage.closure.process import ClosureProcess
from brokerage.company_service import CompanyService
from brokerage.store import Store
from engine.chat import ChatRunner
from engine.config import Settings
from engine.redis_keys import last_key, price_key
from engine.types import (
    LastPrice,
    PortfolioSnapshot,
    last_price_json_decoder,
    snapshot_json_decoder,
)

P = ParamSpec("P")
R = TypeVar("R")
MAX_REDIS_CONNECTIONS = 64
REDIS_POOL_WAIT_S = 10.0


class RedisConnector:
    """One asyncio Redis client per gateway, created on first use inside the serving event loop.

    redis-py asyncio connections belong to the loop that opened them; creating the client lazily
    keeps a Services object safe to build outside that loop (e.g. in a Serve replica's constructor).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: aioredis.Redis | None = None

    def client(self) -> aioredis.Redis:
        if self._client is None:
            # A blocking pool: a burst of thousands of sockets joining at once waits for a free
            # connection instead of failing with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=MAX_REDIS_CONNECTIONS, timeout=REDIS_POOL_WAIT_S, health_check_interval=30
            )
            self._client = aioredis.Redis.from_pool(pool)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class PortfolioReads(Protocol):
    async def latest(self, account_id: str) -> PortfolioSnapshot | None: ...
    async def last_price(self, symbol: str) -> LastPrice | None: ...


class RedisPortfolioReads:
    """Reads the agreed keys `portfolio:last:{account}` and `price:{SYMBOL}` written by the engine."""

    def __init__(self, redis: RedisConnector) -> None:
        self._redis = redis

    async def latest(self, account_id: str) -> PortfolioSnapshot | None:
        raw = await self._redis.client().get(last_key(account_id))
        return None if raw is None else snapshot_json_decoder.decode(raw)

    async def last_price(self, symbol: str) -> LastPrice | None:
        raw = await self._redis.client().get(price_key(symbol))
        return None if raw is None else last_price_json_decoder.decode(raw)


class AsyncBroker:
    """The Broker port, awaited: each method runs the Broker method of the same name off the event loop,
    through `_run` (a thread pool in process, a Ray task under Serve). Declared method by method with
    the Broker's own signatures, so a type checker checks every call site."""

    async def _run(self, method: Callable[Concatenate[Broker, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run `method` (a function of the Broker protocol) on the real broker: subclasses say where."""
        raise NotImplementedError

    async def create_account(self, application: models.AccountApplication) -> models.BrokerAccount:
        return await self._run(Broker.create_account, application)

    async def get_account(self, account_id: str) -> models.BrokerAccount:
        return await self._run(Broker.get_account, account_id)

    async def find_account_by_email(self, email: str) -> models.BrokerAccount | None:
        return await self._run(Broker.find_account_by_email, email)

    async def close_account(self, account_id: str) -> models.BrokerAccount:
        return await self._run(Broker.close_account, account_id)

    async def list_ach_relationships(self, account_id: str) -> list[models.AchRelationship]:
        return await self._run(Broker.list_ach_relationships, account_id)

    async def create_ach_relationship(
        self, account_id: str, request: models.ManualAchRequest
    ) -> models.AchRelationship:
        return await self._run(Broker.create_ach_relationship, account_id, request)

    async def create_ach_relationship_from_processor_token(
        self, account_id: str, processor_token: str
    ) -> models.AchRelationship:
        return await self._run(Broker.create_ach_relationship_from_processor_token, account_id, processor_token)

    async def delete_ach_relationship(self, account_id: str, relationship_id: str) -> None:
        return await self._run(Broker.delete_ach_relationship, account_id, relationship_id)

    async def create_transfer(
        self, account_id: str, relationship_id: str, amount: Decimal, direction: str
    ) -> models.Transfer:
        return await self._run(Broker.create_transfer, account_id, relationship_id, amount, direction)

    async def get_transfer(self, account_id: str, transfer_id: str) -> models.Transfer:
        return await self._run(Broker.get_transfer, account_id, transfer_id)

    async def list_transfers(self, account_id: str) -> list[models.Transfer]:
        return await self._run(Broker.list_transfers, account_id)

    async def cancel_transfer(self, account_id: str, transfer_id: str) -> None:
        return await self._run(Broker.cancel_transfer, account_id, transfer_id)

    async def submit_order(self, account_id: str, request: models.OrderRequest) -> models.Order:
        return await self._run(Broker.submit_order, account_id, request)

    async def get_order(self, account_id: str, order_id: str) -> models.Order:
        return await self._run(Broker.get_order, account_id, order_id)

    async def list_orders(self, account_id: str, status: str = "all") -> list[models.Order]:
        return await self._run(Broker.list_orders, account_id, status)

    async def cancel_order(self, account_id: str, order_id: str) -> None:
        return await self._run(Broker.cancel_order, account_id, order_id)

    async def list_positions(self, account_id: str) -> list[models.BrokerPosition]:
        return await self._run(Broker.list_positions, account_id)

    async def close_all_positions(self, account_id: str) -> list[models.CloseResult]:
        return await self._run(Broker.close_all_positions, account_id)

    async def list_activities(self, account_id: str) -> list[models.Activity]:
        return await self._run(Broker.list_activities, account_id)


class ThreadPoolBroker(AsyncBroker):
    """Runs a Broker's blocking calls (HTTP to Alpaca, SQL ledger) on a private thread pool."""

    def __init__(self, broker: Broker, max_workers: int = 8) -> None:
        self.broker = broker
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="broker")

    async def _run(self, method: Callable[Concatenate[Broker, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        bound: Callable[P, R] = getattr(self.broker, method.__name__)  # the broker's own, not the protocol's stub
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(bound, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class EngineState(msgspec.Struct, kw_only=True):
    """What the gateway knows of the realtime engine, refreshed in the background (health stays cheap)."""

    state: Literal["ok", "degraded", "down", "unknown"] = "unknown"
    feed_connected: bool | None = None
    shards_alive: int | None = None
    shards_expected: int | None = None
    checked_at: float | None = None
    detail: dict[str, Any] = {}


class EngineHealth(Protocol):
    async def refresh(self) -> EngineState:
        """Ask the engine (may be slow; the gateway calls it off the request path)."""
        ...


class UnknownEngineHealth:
    """For a gateway that runs apart from the engine (uvicorn tests, benchmarks): it cannot see the shards."""

    async def refresh(self) -> EngineState:
        return EngineState(state="unknown", detail={"reason": "engine topology not visible from this process"})


class ClosureRunner(Protocol):
    """Account closure as the routes call it: `brokerage.closure.process.ClosureProcess`'s route-facing
    methods, awaited. In process (uvicorn, tests) its blocking calls run on a thread pool; under Serve
    each call is a Ray task on the cluster. The process raises typed brokerage errors, raised again here."""

    async def readiness(self, account_id: str) -> Any: ...
    async def initiate(self, account_id: str, user_id: str, ach_relationship_id: str) -> dict[str, Any]: ...
    async def advance(self, account_id: str) -> Any: ...
    async def settlement_status(self, account_id: str) -> dict[str, Any]: ...
    async def withdraw_funds(self, account_id: str) -> dict[str, Any]: ...
    async def withdrawal_status(self, account_id: str, transfer_id: str) -> dict[str, Any]: ...
    async def close_account(self, account_id: str) -> dict[str, Any]: ...
    async def progress(self, account_id: str) -> dict[str, Any]: ...
    async def resume(self, account_id: str) -> dict[str, Any]: ...
    async def cancel(self, account_id: str) -> dict[str, Any]: ...
    async def status(self, account_id: str) -> dict[str, Any]: ...
    async def unfinished(self) -> list[str]: ...


class ClosureCalls:
    """The ClosureRunner methods, each one call of the process's method of that name through `_run`
    (a thread pool here, a Ray task under Serve): one list of forwarders for every runner."""

    async def _run(self, method: str, *args: Any) -> Any:
        raise NotImplementedError

    async def readiness(self, account_id: str) -> Any:
        return await self._run("readiness", account_id)

    async def initiate(self, account_id: str, user_id: str, ach_relationship_id: str) -> dict[str, Any]:
        return await self._run("initiate", account_id, user_id, ach_relationship_id)

    async def advance(self, account_id: str) -> Any:
        return await self._run("advance", account_id)

    async def settlement_status(self, account_id: str) -> dict[str, Any]:
        return await self._run("settlement_status", account_id)

    async def withdraw_funds(self, account_id: str) -> dict[str, Any]:
        return await self._run("withdraw_funds", account_id)

    async def withdrawal_status(self, account_id: str, transfer_id: str) -> dict[str, Any]:
        return await self._run("withdrawal_status", account_id, transfer_id)

    async def close_account(self, account_id: str) -> dict[str, Any]:
        return await self._run("close_account", account_id)

    async def progress(self, account_id: str) -> dict[str, Any]:
        return await self._run("progress", account_id)

    async def resume(self, account_id: str) -> dict[str, Any]:
        return await self._run("resume", account_id)

    async def cancel(self, account_id: str) -> dict[str, Any]:
        return await self._run("cancel", account_id)

    async def status(self, account_id: str) -> dict[str, Any]:
        return await self._run("status", account_id)

    async def unfinished(self) -> list[str]:
        return await self._run("unfinished")


class ThreadPoolClosureRunner(ClosureCalls):
    """A ClosureProcess in this process, its blocking calls (broker, SQL, SMTP) on a private thread pool.

    Two calls changing one closure at once are safe: the process takes the closure's own lock
    (`ClosureStore.lock`, across processes) around every step that acts."""

    def __init__(self, process: ClosureProcess, max_workers: int = 4) -> None:
        self.process = process
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="closure")

    async def _run(self, method: str, *args: Any) -> Any:
        fn = functools.partial(getattr(self.process, method), *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Services:
    settings: Settings
    redis: RedisConnector
    store: Store
    portfolio: PortfolioReads
    broker: AsyncBroker | None = None
    engine: EngineHealth = field(default_factory=UnknownEngineHealth)
    chat: ChatRunner | None = None
    closure: ClosureRunner | None = None
    company: CompanyService = None  # type: ignore[assignment]  # built from the settings and the store

    def __post_init__(self) -> None:
        if self.company is None:
            self.company = CompanyService.from_settings(self.settings, self.store)

    @classmethod
    def in_process(
        cls,
        settings: Settings,
        redis_url: str,
        store: Store,
        broker: Broker | None = None,
        chat: ChatRunner | None = None,
        closure: ClosureProcess | None = None,
    ) -> Services:
        """The plain-Python wiring used under uvicorn: no Ray anywhere."""
        connector = RedisConnector(redis_url)
        return cls(
            settings=settings,
            redis=connector,
            store=store,
            portfolio=RedisPortfolioReads(connector),
            broker=None if broker is None else ThreadPoolBroker(broker),
            chat=chat,
            closure=None if closure is None else ThreadPoolClosureRunner(closure),
        )

    async def aclose(self) -> None:
        await self.redis.close()
        close_chat = getattr(self.chat, "aclose", None)
        if close_chat is not None:
            await close_chat()
        for closable in (self.broker, self.closure):
            close = getattr(closable, "close", None)
            if close is not None:
                close()
