"""WebSocket `/ws/portfolio/{account_id}?token=<JWT>`: the last snapshot at once, then live updates.

Fan-out: one Redis pub/sub connection per gateway replica (the `PortfolioHub`), subscribed to the
channels of the accounts someone watches here. Each snapshot becomes one frame, built once, and
goes into every watcher's latest-wins slot; a per-socket sender drains the slot, so a slow client
only ever skips to the newest snapshot and never holds up the hub or other clients.

The slot relies on the server's send waiting for a slow socket, which uvicorn (and Serve's direct
ingress) do. Behind Serve's HTTP proxy an ASGI send never waits (the replica queues frames for the
proxy), so there a slow client is bounded by the engine's per-account publish rate only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import random
import time

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine import metrics
from engine.auth import AuthError
from engine.pubsub import register_interest
from engine.redis_keys import (
    account_of_channel,
    interest_key,
    last_key,
    portfolio_channel,
)
from engine.wire import json_encoder
from gateway.auth import check_owner, require_user, services_of
from gateway.channels import ChannelReader
from gateway.errors import ApiError, error_response
from gateway.openapi import SocketCompanion
from gateway.services import Services

log = logging.getLogger("clera.gateway.ws")

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
GOING_AWAY = 1001
CONTROL_CHANNEL = "gateway:hub"
_CONTROL_BACKLOG = 16
JOIN_TIMEOUT_S = 5.0


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def money(value: float) -> str:
    """`$1,234.56`, or `-$1,234.56` for a negative amount."""
    return f"{'-' if value < 0 else ''}${abs(value):,.2f}"


def signed_return(change: float, pct: float) -> str:
    """The legacy `today_return` text: `+$12.30 (0.45%)`, `-$3.10 (-0.12%)`."""
    sign = "-" if change < 0 else "+"
    return f"{sign}${abs(change):,.2f} ({pct:.2f}%)"


class SnapshotHead(msgspec.Struct, gc=False):
    """The snapshot fields the legacy frame needs; decoding only these skips the positions list."""

    account_id: str
    seq: int
    as_of: float
    publish_ts: float
    total_value: float
    day_change: float
    day_change_pct: float
    source: str = ""


class LegacyFields(msgspec.Struct, gc=False, tag_field="type", tag="portfolio_update"):
    """What today's frontend reads, in the order it always came (the full snapshot is appended).

    Built per snapshot per replica: a struct never tracked by the cyclic GC, unlike a dict, so
    thousands of frames a second do not drive collections that would stall every socket."""

    account_id: str
    seq: int
    total_value: str
    today_return: str
    raw_value: float
    raw_return: float
    raw_return_percent: float
    timestamp: str
    source: str


_head_decoder = msgspec.json.Decoder(SnapshotHead)


def snapshot_frame(raw: bytes) -> tuple[int, str]:
    """(seq, frame) for a snapshot as stored in Redis: the fields today's frontend reads, beside the
    full snapshot (additive: nothing it reads changed). The snapshot's JSON is spliced in as it came,
    so a busy replica decodes a few fields per update instead of re-encoding every position.
    Raises msgspec.DecodeError on anything that is not a snapshot."""
    head = _head_decoder.decode(raw)
    legacy = LegacyFields(
        account_id=head.account_id,
        seq=head.seq,
        total_value=money(head.total_value),
        today_return=signed_return(head.day_change, head.day_change_pct),
        raw_value=head.total_value,
        raw_return=head.day_change,
        raw_return_percent=head.day_change_pct,
        timestamp=_iso(head.publish_ts or head.as_of),
        source=head.source,
    )
    return head.seq, (json_encoder.encode(legacy)[:-1] + b',"snapshot":' + raw.strip() + b"}").decode()


def _control(obj: dict[str, object]) -> str:
    return json_encoder.encode(obj).decode()


def error_frame(code: str, message: str) -> str:
    return _control({"type": "error", "error": {"code": code, "message": message, "details": None}})


class ClientFrame(msgspec.Struct, forbid_unknown_fields=False):
    type: str


_client_decoder = msgspec.json.Decoder(ClientFrame)


class Watcher:
    """One open socket: a latest-wins snapshot slot, a short control queue, and a single writer task."""

    def __init__(self, websocket: WebSocket, account_id: str) -> None:
        self.websocket = websocket
        self.account_id = account_id
        self.last_heard = time.monotonic()
        self.last_ping = self.last_heard
        self._latest: str | None = None
        self._latest_seq = -1
        self._sent_seq = -1
        self._control: collections.deque[str] = collections.deque(maxlen=_CONTROL_BACKLOG)
        self._close: tuple[int, str] | None = None
        self._wake = asyncio.Event()

    def offer(self, seq: int, frame: str) -> None:
        """Replace whatever is waiting; snapshots older than what was offered/sent are dropped."""
        if seq <= self._latest_seq or seq <= self._sent_seq:
            return
        self._latest, self._latest_seq = frame, seq
        self._wake.set()

    def say(self, frame: str) -> None:
        self._control.append(frame)
        self._wake.set()

    def request_close(self, code: int, reason: str) -> None:
        self._close = (code, reason)
        self._wake.set()

    async def run(self) -> None:
        """The socket's only writer (ASGI sends must not interleave); ends when the peer is gone."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._control:
                    await self.websocket.send_text(self._control.popleft())
                if self._latest is not None:
                    frame, seq = self._latest, self._latest_seq
                    self._latest = None
                    self._sent_seq = seq
                    await self.websocket.send_text(frame)
                if self._close is not None:
                    await self.websocket.close(code=self._close[0], reason=self._close[1])
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the peer went away mid-send; the receive loop sees the disconnect and cleans up


class PortfolioHub:
    """The replica's single Redis subscription, its interest keys and its heartbeat clock."""

    def __init__(self, services: Services) -> None:
        self._services = services
        settings = services.settings
        self._interest_ttl_s = settings.interest_ttl_s
        self._heartbeat_s = settings.heartbeat_interval
        self._timeout_s = settings.connection_timeout
        self._tick_s = min(settings.heartbeat_interval, settings.interest_ttl_s / 3, settings.connection_timeout / 4)
        self._silence_s = 3 * self._tick_s + 5.0
        self._watchers: dict[str, set[Watcher]] = {}
        self._channels: ChannelReader | None = None
        self._ready = asyncio.Event()  # set while the pub/sub connection is up and subscribed
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sockets(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def _count_sockets(self) -> None:
        metrics.sink().record(metrics.OPEN_WEBSOCKETS, self.sockets)

    def _ensure_started(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._read_forever(), name="hub-reader"),
                loop.create_task(self._maintain_forever(), name="hub-maintenance"),
            ]

    async def join(self, watcher: Watcher) -> None:
        """Subscribe (once per account), register interest, then hand the socket the last snapshot."""
        self._ensure_started()
        await asyncio.wait_for(self._ready.wait(), timeout=JOIN_TIMEOUT_S)
        account = watcher.account_id
        first = account not in self._watchers
        self._watchers.setdefault(account, set()).add(watcher)
        self._count_sockets()
        if first:
            channels = self._channels
            if channels is not None:
                # A connection lost meanwhile (Redis drops a subscriber whose output buffer overflows,
                # e.g. a replica stalled under load) fails only this subscribe: the reader reconnects
                # and resubscribes every watched account, this one included.
                with contextlib.suppress(RedisError, ConnectionError, OSError, RuntimeError):
                    channels.subscribe([portfolio_channel(account)])
        # One round trip: interest (so the shards publish this account live) and the last snapshot.
        async with self._services.redis.client().pipeline(transaction=False) as pipe:
            if first:
                pipe.set(interest_key(account), b"1", px=max(1, int(self._interest_ttl_s * 1000)))
            pipe.get(last_key(account))
            raw = (await pipe.execute())[-1]
        if raw is not None:
            with contextlib.suppress(msgspec.DecodeError):  # an unreadable stored value: wait for a live one
                watcher.offer(*snapshot_frame(raw))

    async def leave(self, watcher: Watcher) -> None:
        account = watcher.account_id
        watchers = self._watchers.get(account)
        if watchers is None:
            return
        watchers.discard(watcher)
        self._count_sockets()
        if not watchers:
            del self._watchers[account]
            channels = self._channels
            if channels is not None:
                with contextlib.suppress(Exception):  # an unsubscribe lost with the connection is moot
                    channels.unsubscribe([portfolio_channel(account)])

    def dispatch(self, channel: bytes | str, data: bytes | str) -> None:
        account = account_of_channel(channel)
        watchers = self._watchers.get(account)
        if not watchers:
            return
        try:
            seq, frame = snapshot_frame(data if isinstance(data, bytes) else data.encode())
        except msgspec.DecodeError as exc:
            log.warning("dropped an unreadable snapshot on portfolio:%s: %s", account, exc)
            return
        for watcher in watchers:
            watcher.offer(seq, frame)

    async def _read_forever(self) -> None:
        """Listen on one pub/sub connection; on loss, reconnect with jittered backoff and catch up."""
        backoff = 0.1
        redis = self._services.redis.client()
        while True:
            channels = ChannelReader(redis)
            try:
                await channels.open([CONTROL_CHANNEL, *(portfolio_channel(a) for a in list(self._watchers))])
                self._channels = channels
                self._ready.set()
                await self._catch_up()
                backoff = 0.1
                while True:  # the maintenance loop pings it every tick: silence means a dead connection
                    for channel, data in await asyncio.wait_for(channels.read(), self._silence_s):
                        self.dispatch(channel, data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis gone or restarting: keep the sockets, retry
                metrics.sink().record(metrics.REDIS_ERRORS, 1, {"component": "gateway"})
                log.warning("portfolio hub lost Redis (%s); retrying in %.1fs", exc, backoff)
            finally:
                self._ready.clear()
                self._channels = None
                with contextlib.suppress(Exception):
                    await channels.close()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 5.0)

    async def _catch_up(self) -> None:
        """After (re)subscribing, offer each watched account its stored snapshot (seq filters repeats)."""
        accounts = list(self._watchers)
        if not accounts:
            return
        raws = await self._services.redis.client().mget([last_key(a) for a in accounts])
        for account, raw in zip(accounts, raws, strict=True):
            if not isinstance(raw, bytes):  # missing (None); the client never decodes to str
                continue
            try:
                seq, frame = snapshot_frame(raw)
            except msgspec.DecodeError:
                continue
            for watcher in self._watchers.get(account, ()):
                watcher.offer(seq, frame)

    async def _maintain_forever(self) -> None:
        refreshed = 0.0
        while True:
            await asyncio.sleep(self._tick_s)
            now = time.monotonic()
            channels = self._channels
            if channels is not None:
                with contextlib.suppress(Exception):  # a dead connection is the reader's to notice
                    channels.ping()
            for watchers in list(self._watchers.values()):
                for watcher in watchers:
                    if now - watcher.last_heard > self._timeout_s:
                        watcher.request_close(GOING_AWAY, "connection timeout")
                    elif now - watcher.last_ping >= self._heartbeat_s:
                        watcher.last_ping = now
                        watcher.say(_control({"type": "ping", "timestamp": _iso(time.time())}))
            if now - refreshed >= self._interest_ttl_s / 3 and self._watchers:
                try:
                    accounts = list(self._watchers)
                    await register_interest(self._services.redis.client(), accounts, self._interest_ttl_s)
                    refreshed = now
                except Exception as exc:  # noqa: BLE001 - retried next tick; the reader handles reconnection
                    log.warning("interest refresh failed: %s", exc)

    async def close(self) -> None:
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.request_close(GOING_AWAY, "server shutting down")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []


async def portfolio_socket(websocket: WebSocket) -> None:
    """Accept first, then authenticate, so a refusal is a WebSocket close code (1008) the client can read."""
    account_id = websocket.path_params["account_id"]
    await websocket.accept()
    services = services_of(websocket)
    try:
        user_id = require_user(websocket)
        await check_owner(services, user_id, account_id)
    except (AuthError, ApiError) as exc:
        await websocket.close(code=POLICY_VIOLATION, reason=exc.message[:120])
        return
    except Exception:
        log.exception("auth check failed on /ws/portfolio")
        await websocket.close(code=INTERNAL_ERROR, reason="internal error")
        return

    hub: PortfolioHub = websocket.app.state.hub
    watcher = Watcher(websocket, account_id)
    writer = asyncio.create_task(watcher.run(), name=f"ws-writer-{account_id}")
    try:
        await hub.join(watcher)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            watcher.last_heard = time.monotonic()
            _answer(watcher, message.get("text"))
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("portfolio socket failed for %s", account_id, extra={"account_id": account_id})
        watcher.request_close(INTERNAL_ERROR, "internal error")
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(writer), timeout=1.0)
    finally:
        await hub.leave(watcher)
        writer.cancel()


def _answer(watcher: Watcher, text: str | None) -> None:
    if text is None:
        watcher.say(error_frame("bad_request", "binary frames are not supported; send JSON text"))
        return
    try:
        frame = _client_decoder.decode(text)
    except msgspec.DecodeError:
        watcher.say(error_frame("bad_request", 'expected a JSON object such as {"type":"heartbeat"}'))
        return
    if frame.type == "heartbeat":
        watcher.say(_control({"type": "heartbeat_ack", "timestamp": _iso(time.time())}))
    elif frame.type != "pong":
        watcher.say(error_frame("bad_request", f"unknown message type {frame.type[:40]!r}"))


async def upgrade_required(_: Request) -> Response:
    """A plain HTTP request on the socket's path gets the error shape instead of a bare 404."""
    response = error_response(426, "upgrade_required", "this path speaks WebSocket: send an Upgrade: websocket request")
    response.headers["Upgrade"] = "websocket"
    return response


def routes(_: Services) -> list[BaseRoute]:
    path = "/ws/portfolio/{account_id}"
    return [WebSocketRoute(path, portfolio_socket), SocketCompanion(path, upgrade_required)]
