"""The few services the gateway's routes need, as small interfaces with in-process implementations.

`serve_app` swaps in Ray-backed ones (a broker that runs calls as Ray tasks, engine health from the
topology); tests and the benchmark build the same app with these and run it under plain uvicorn.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec
import redis.asyncio as aioredis

from brokerage.broker import Broker
from brokerage.store import Store
from engine.chat import ChatRunner
from engine.config import Settings
from engine.types import LastPrice, PortfolioSnapshot, last_price_json_decoder, snapshot_json_decoder


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
        raw = await self._redis.client().get(f"portfolio:last:{account_id}")
        return None if raw is None else snapshot_json_decoder.decode(raw)

    async def last_price(self, symbol: str) -> LastPrice | None:
        raw = await self._redis.client().get(f"price:{symbol.upper()}")
        return None if raw is None else last_price_json_decoder.decode(raw)


class AsyncBroker(Protocol):
    """The sync Broker port, called without blocking the event loop: `await broker.call("get_account", id)`."""

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...


class ThreadPoolBroker:
    """Runs a Broker's blocking calls (HTTP to Alpaca, SQL ledger) on a private thread pool."""

    def __init__(self, broker: Broker, max_workers: int = 8) -> None:
        self.broker = broker
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="broker")

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.broker, method)
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

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


@dataclass
class Services:
    settings: Settings
    redis: RedisConnector
    store: Store
    portfolio: PortfolioReads
    broker: AsyncBroker | None = None
    engine: EngineHealth = field(default_factory=UnknownEngineHealth)
    chat: ChatRunner | None = None

    @classmethod
    def in_process(
        cls,
        settings: Settings,
        redis_url: str,
        store: Store,
        broker: Broker | None = None,
        chat: ChatRunner | None = None,
    ) -> "Services":
        """The plain-Python wiring used under uvicorn: no Ray anywhere."""
        connector = RedisConnector(redis_url)
        return cls(
            settings=settings,
            redis=connector,
            store=store,
            portfolio=RedisPortfolioReads(connector),
            broker=None if broker is None else ThreadPoolBroker(broker),
            chat=chat,
        )

    async def aclose(self) -> None:
        await self.redis.close()
        close_chat = getattr(self.chat, "aclose", None)
        if close_chat is not None:
            await close_chat()
        close = getattr(self.broker, "close", None)
        if close is not None:
            close()
