"""Helpers shared by the gateway tests: settings, a seeded SQLite store, a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import redis.asyncio as aioredis
import uvicorn
from conftest import RAY_SECRETS

from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine.auth import mint_jwt
from engine.config import Settings, load_settings
from engine.pubsub import publish_snapshots
from engine.types import PortfolioSnapshot, PositionValue
from gateway import routes_core, ws
from gateway.app import RouteProvider, build_app
from gateway.services import Services

JWT_SECRET = RAY_SECRETS["SUPABASE_JWT_SECRET"]
API_KEY = RAY_SECRETS["BACKEND_API_KEY"]
ALICE, BOB = "user-alice", "user-bob"
ALICE_ACCOUNT, BOB_ACCOUNT = "acct-alice-1", "acct-bob-1"
CORE_PROVIDERS: list[RouteProvider] = [routes_core.routes, ws.routes]


def make_settings(redis_url: str, tmp_path: Path, **env: str) -> Settings:
    base = {
        "REDIS_URL": redis_url,
        "CLERA_DATA_DIR": str(tmp_path / "data"),
        "BACKEND_API_KEY": API_KEY,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
    }
    return load_settings({**base, **env}, env_file=None)


def make_store(path: Path) -> SqlStore:
    store = SqlStore(Database(f"sqlite:///{path}"))
    store.migrate()
    for user, account in ((ALICE, ALICE_ACCOUNT), (BOB, BOB_ACCOUNT)):
        store.ensure_user(user)
        if store.get_account(account) is None:
            store.add_account(user, account, status="active")
    return store


def token(user: str, ttl_s: float = 600, secret: str = JWT_SECRET) -> str:
    return mint_jwt(user, secret, ttl_s=ttl_s)


def unsigned_token(user: str) -> str:
    """A token claiming to be `user` with `alg: none` and no signature (the classic JWT forgery)."""
    import base64
    import json

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"sub": user, "aud": "authenticated", "exp": int(time.time()) + 600}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def wrong_audience_token(user: str) -> str:
    import jwt

    return jwt.encode({"sub": user, "aud": "anon", "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


def snapshot(
    account: str, seq: int, total: float = 10_000.0, change: float = 25.5, n_positions: int = 1
) -> PortfolioSnapshot:
    now = time.time()
    positions = [
        PositionValue(
            symbol=f"S{i}", qty=10.0, last_price=total / 20 / max(n_positions, 1), prev_close=1.0,
            market_value=total / 2 / max(n_positions, 1), day_change=change / max(n_positions, 1), day_change_pct=0.5,
        )
        for i in range(n_positions)
    ]
    return PortfolioSnapshot(
        account_id=account, seq=seq, as_of=now, ingest_ts=now, publish_ts=now, total_value=total,
        cash=total / 2, positions_value=total / 2, day_change=change,
        day_change_pct=round(change * 100 / (total - change), 4), positions=positions, session="2012-06-01",
        source="replay",
    )


async def publish(redis_url: str, *snapshots: PortfolioSnapshot) -> None:
    """Through the engine's own writer, exactly as the portfolio shards publish."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await publish_snapshots(client, snapshots)
    finally:
        await client.aclose()


def decode(frame: str | bytes) -> dict:
    return msgspec.json.decode(frame)


class Gateway:
    """A real uvicorn server on a real port; `restart()` stops and starts it on the same port."""

    def __init__(
        self,
        services: Services,
        port: int,
        providers: Sequence[RouteProvider] | None = None,
        socket_server: bool = False,
    ) -> None:
        self.services = services
        self.port = port
        self.providers = list(CORE_PROVIDERS if providers is None else providers)
        self.socket_server = socket_server
        self.app = build_app(services, self.providers, socket_server=socket_server)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def native(self) -> str:
        """The replica's own WebSocket server (started with `socket_server=True`)."""
        return f"ws://127.0.0.1:{self.app.state.socket_server.port}"

    async def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None

    async def restart(self) -> None:
        """A new app and new services on the same port: what a redeployed replica looks like to a client."""
        await self.stop()
        self.services = Services.in_process(self.services.settings, self.services.redis.url, self.services.store)
        self.app = build_app(self.services, self.providers, socket_server=self.socket_server)
        await self.start()


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings,
    store: SqlStore,
    port: int,
    providers: Sequence[RouteProvider] | None = None,
    socket_server: bool = False,
) -> AsyncIterator[Gateway]:
    assert settings.redis_url is not None
    gateway = Gateway(Services.in_process(settings, settings.redis_url, store), port, providers, socket_server)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
