"""The replica's fan-out: one Redis subscription for every socket it serves, one latest-wins slot per socket.

Each snapshot becomes one frame, built once, and is offered to every watcher of its account; a slow
client only ever skips to the newest snapshot and never holds up the hub or other clients. The hub
knows nothing of web frameworks: the watchers (gateway.ws for the ASGI route, gateway.socket_server
for the replica's own WebSocket server) carry the frames to their sockets.

On the ASGI route the latest-wins slot relies on the server's send waiting for a slow socket, which
uvicorn (and Serve's direct ingress) do. Behind Serve's HTTP proxy an ASGI send never waits (the
replica queues frames for the proxy), so there a slow client is bounded by the engine's per-account
publish rate only.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time

import msgspec
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential_jitter

from engine import metrics
from engine.pubsub import register_interest
from engine.redis_keys import account_of_channel, interest_key, last_key, portfolio_channel
from gateway.channels import ChannelReader
from gateway.frames import control_frame, error_frame, iso_time, snapshot_frame
from gateway.services import Services

log = logging.getLogger("clera.gateway.ws")

GOING_AWAY = 1001
CONTROL_CHANNEL = "gateway:hub"
CONTROL_BACKLOG = 16  # control frames kept for a socket that is not reading (a client spamming heartbeats)
JOIN_TIMEOUT_S = 5.0


class HubDisconnected(Exception):
    """The pub/sub connection could not be (re)opened, or was lost before it was ever ready."""


class Watcher(abc.ABC):
    """One open socket as the hub sees it: the hub offers it snapshots and control frames and asks it
    to close, never waiting on it. How a frame reaches the peer is the server's business: a writer
    task per socket for the ASGI route (`gateway.ws`), a write straight to the transport for the
    replica's own server (`gateway.socket_server`). Either way a slow socket keeps only the newest
    snapshot, and never one older than a snapshot it was already offered."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.last_heard = time.monotonic()
        self.last_ping = self.last_heard

    @abc.abstractmethod
    def offer(self, seq: int, frame: bytes) -> None:
        """A snapshot frame (UTF-8 text); one with a seq at or below one offered before is ignored."""

    @abc.abstractmethod
    def say(self, frame: bytes) -> None:
        """A control frame (UTF-8 text), sent before any waiting snapshot."""

    @abc.abstractmethod
    def request_close(self, code: int, reason: str) -> None:
        """Close the socket once what is queued for it has been written."""


class ClientFrame(msgspec.Struct, forbid_unknown_fields=False):
    type: str


_client_decoder = msgspec.json.Decoder(ClientFrame)


def answer(watcher: Watcher, text: str | None) -> None:
    """A client's message (None for a binary one), answered the same way on every server."""
    if text is None:
        watcher.say(error_frame("bad_request", "binary frames are not supported; send JSON text"))
        return
    try:
        frame = _client_decoder.decode(text)
    except msgspec.DecodeError:
        watcher.say(error_frame("bad_request", 'expected a JSON object such as {"type":"heartbeat"}'))
        return
    if frame.type == "heartbeat":
        watcher.say(control_frame({"type": "heartbeat_ack", "timestamp": iso_time(time.time())}))
    elif frame.type != "pong":
        watcher.say(error_frame("bad_request", f"unknown message type {frame.type[:40]!r}"))


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
        # Python 3.11's wait_for swallows a cancellation that meets a reply arriving in the same loop
        # turn (an unsubscribe's confirmation as sockets close on shutdown): the reader checks this too.
        self._closed = False
        self.sockets = 0

    def _count_sockets(self, delta: int) -> None:
        """Kept as a running count: summing every account's watchers per join is quadratic in sockets."""
        self.sockets += delta
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
        watchers = self._watchers.setdefault(account, set())
        if watcher not in watchers:
            watchers.add(watcher)
            self._count_sockets(1)
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
        if watcher in watchers:
            watchers.discard(watcher)
            self._count_sockets(-1)
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
        """Listen on one pub/sub connection for as long as the replica runs. A connection that cannot
        be opened is retried with jittered exponential backoff; one lost after it was up is
        reopened at once (the backoff starts afresh)."""
        while not self._closed:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(HubDisconnected),
                wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
                before_sleep=before_sleep_log(log, logging.WARNING),
            ):
                with attempt:
                    await self._listen()

    async def _listen(self) -> None:
        """One connection's life: subscribe every watched account, catch up, then dispatch until it
        is lost. Returns after a loss once it was up; raises HubDisconnected if it never came up."""
        channels = ChannelReader(self._services.redis.client())
        ready = False
        try:
            await channels.open([CONTROL_CHANNEL, *(portfolio_channel(a) for a in list(self._watchers))])
            self._channels = channels
            self._ready.set()
            await self._catch_up()
            ready = True
            while not self._closed:  # the maintenance loop pings it every tick: silence means a dead connection
                for channel, data in await asyncio.wait_for(channels.read(), self._silence_s):
                    self.dispatch(channel, data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis gone or restarting: keep the sockets, reconnect
            metrics.sink().record(metrics.REDIS_ERRORS, 1, {"component": "gateway"})
            log.warning("portfolio hub lost Redis: %s", exc)
            if not ready and not self._closed:
                raise HubDisconnected(str(exc)) from exc
        finally:
            self._ready.clear()
            self._channels = None
            with contextlib.suppress(Exception):
                await channels.close()

    async def _catch_up(self) -> None:
        """After (re)subscribing, offer each watched account its stored snapshot (seq filters repeats)."""
        accounts = list(self._watchers)
        if not accounts:
            return
        raws = await self._services.redis.client().mget([last_key(a) for a in accounts])
        for account, raw in zip(accounts, raws, strict=True):
            if not isinstance(raw, bytes):
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
                        watcher.say(control_frame({"type": "ping", "timestamp": iso_time(time.time())}))
            if now - refreshed >= self._interest_ttl_s / 3 and self._watchers:
                try:
                    accounts = list(self._watchers)
                    await register_interest(self._services.redis.client(), accounts, self._interest_ttl_s)
                    refreshed = now
                except Exception as exc:  # noqa: BLE001  (retried next tick; the reader handles reconnection)
                    log.warning("interest refresh failed: %s", exc)

    async def close(self) -> None:
        self._closed = True
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.request_close(GOING_AWAY, "server shutting down")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
