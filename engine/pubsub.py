"""Redis names and I/O of the realtime path (asyncio redis-py).

Writers (the shards) publish snapshots in batches (one script call per chunk) and prices in one MSET;
readers (the gateway, the console, Ray-free code) read the last values and subscribe. The gateway
reads its subscription in bulk (`gateway.channels`); one `PortfolioSubscriber` (console, tools) holds one
Redis connection for any number of local listeners: each channel is subscribed once, while some
listener wants it, and every listener keeps only the latest snapshot (a slow reader skips states,
it never builds a backlog). Whoever listens keeps `interest:{account}` alive, which is how the
shards know whose snapshots to publish live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Collection, Iterable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from tenacity import AsyncRetrying, before_sleep_log, wait_exponential

from engine.redis_keys import (
    HOLDINGS_CHANNEL,
    PORTFOLIO_PATTERN,
    PORTFOLIO_PREFIX,
    account_of_channel,
    interest_key,
    last_key,
    portfolio_channel,
    price_key,
)
from engine.types import LastPrice, PortfolioSnapshot, last_price_json_decoder, snapshot_json_decoder
from engine.wire import json_encoder

log = logging.getLogger(__name__)

PIPELINE_CHUNK = 2000
_ids_decoder = msgspec.json.Decoder(list[str])


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


async def _run_chunked(client: aioredis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(commands), PIPELINE_CHUNK):
        pipe = client.pipeline(transaction=False)
        for name, *args in commands[start : start + PIPELINE_CHUNK]:
            getattr(pipe, name)(*args)
        results.extend(await pipe.execute())
    return results


# --- writers -------------------------------------------------------------------------------
# One EVALSHA per chunk instead of a SET and a PUBLISH per snapshot: redis-py spends ~17 us of the
# writer's CPU packing each command and parsing its reply, most of a shard's publishing cost, while
# the script costs Redis ~2.5 us a snapshot more than the plain commands (measured with 5-position
# snapshots: 13.5 + 4.9 us against 24.0 + 2.4 us). KEYS are the last-value keys; ARGV[1] says how many
# of them, in order, are also published live, on the account's channel.
_PUBLISH_SCRIPT = f"""
local live = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1])
  if i <= live then
    redis.call('PUBLISH', '{portfolio_channel("")}' .. string.sub(KEYS[i], {len(last_key("")) + 1}), ARGV[i + 1])
  end
end
return #KEYS
"""
_scripts: weakref.WeakKeyDictionary[aioredis.Redis, AsyncScript] = weakref.WeakKeyDictionary()


async def publish_snapshots(
    client: aioredis.Redis, live: Iterable[PortfolioSnapshot], quiet: Iterable[PortfolioSnapshot] = ()
) -> int:
    """PUBLISH + keep last for `live`, keep last only for `quiet`; returns the snapshots written.

    Each account's last value is stored before its snapshot is published: whoever hears a snapshot
    and then reads the last value never sees an older one.
    """
    script = _scripts.get(client)
    if script is None:  # redis-py reloads a registered script after a server restart's NOSCRIPT
        script = _scripts[client] = client.register_script(_PUBLISH_SCRIPT)
    live_items = [(last_key(s.account_id), json_encoder.encode(s)) for s in live]
    items = live_items + [(last_key(s.account_id), json_encoder.encode(s)) for s in quiet]
    for start in range(0, len(items), PIPELINE_CHUNK):
        chunk = items[start : start + PIPELINE_CHUNK]
        live_here = max(0, min(len(live_items) - start, len(chunk)))
        await script(keys=[k for k, _ in chunk], args=[live_here, *(d for _, d in chunk)])
    return len(items)


async def write_prices(client: aioredis.Redis, prices: Collection[LastPrice]) -> None:
    if prices:
        await client.mset({price_key(p.symbol): json_encoder.encode(p) for p in prices})


async def announce_holdings_changed(client: aioredis.Redis, account_ids: Collection[str]) -> None:
    """What a position source does after cash or positions of these accounts changed."""
    if account_ids:
        await client.publish(HOLDINGS_CHANNEL, json_encoder.encode(list(account_ids)))


async def register_interest(client: aioredis.Redis, account_ids: Collection[str], ttl_s: float) -> None:
    """Ask the shards to publish these accounts live for the next `ttl_s` seconds."""
    if account_ids:
        ms = max(1, int(ttl_s * 1000))
        await _run_chunked(client, [("set", interest_key(a), b"1", None, ms) for a in account_ids])


# --- readers -------------------------------------------------------------------------------
async def _read_json(
    client: aioredis.Redis, keys: dict[str, str], decoder: msgspec.json.Decoder[Any]
) -> dict[str, Any]:
    """{name: decoded value of keys[name]} in chunked MGETs; a missing or unreadable value is left out."""
    names = list(keys)
    out: dict[str, Any] = {}
    for start in range(0, len(names), PIPELINE_CHUNK):
        chunk = names[start : start + PIPELINE_CHUNK]
        for name, raw in zip(chunk, await client.mget([keys[n] for n in chunk]), strict=True):
            if raw is not None:
                try:
                    out[name] = decoder.decode(raw)
                except msgspec.DecodeError:
                    log.warning("unreadable %s", keys[name])
    return out


async def read_prices(client: aioredis.Redis, symbols: Collection[str]) -> dict[str, LastPrice]:
    """Latest prices; a missing or unreadable entry is left out."""
    return await _read_json(client, {s: price_key(s) for s in symbols}, last_price_json_decoder)


async def read_last_snapshots(client: aioredis.Redis, account_ids: Collection[str]) -> dict[str, PortfolioSnapshot]:
    """Last snapshots; a missing or unreadable entry is left out."""
    return await _read_json(client, {a: last_key(a) for a in account_ids}, snapshot_json_decoder)


async def interested(client: aioredis.Redis, account_ids: list[str]) -> list[bool]:
    """Whether each account has a live subscriber (an unexpired interest key)."""
    flags: list[bool] = []
    for start in range(0, len(account_ids), PIPELINE_CHUNK):
        chunk = account_ids[start : start + PIPELINE_CHUNK]
        flags.extend(v is not None for v in await client.mget([interest_key(a) for a in chunk]))
    return flags


async def holdings_changes(
    client: aioredis.Redis, subscribed: asyncio.Event | None = None
) -> AsyncIterator[list[str]]:
    """Account ids announced on `holdings:changed`, one list per message; malformed ones are skipped.

    `subscribed` is set once the subscription is in place (nothing announced after it is missed).
    """
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(HOLDINGS_CHANNEL)
    if subscribed is not None:
        subscribed.set()
    try:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            try:
                ids = _ids_decoder.decode(message["data"])
            except msgspec.DecodeError:
                log.warning("ignored malformed %s message %r", HOLDINGS_CHANNEL, message["data"][:100])
                continue
            if ids:
                yield ids
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()


# --- the gateway's subscriber ---------------------------------------------------------------
class Listener:
    """One local consumer of one account's snapshots; keeps only the newest."""

    def __init__(self, hub: PortfolioSubscriber, account_id: str) -> None:
        self.account_id = account_id
        self.skipped = 0  # snapshots replaced before this listener read them
        self._hub = hub
        self._latest: PortfolioSnapshot | None = None
        self._current: PortfolioSnapshot | None = None
        self._ready = asyncio.Event()
        self._closed = False

    def offer(self, snap: PortfolioSnapshot) -> None:
        newest = self._latest or self._current
        if newest is not None and snap.seq <= newest.seq and snap.publish_ts <= newest.publish_ts:
            return  # older than what this listener already has (e.g. the last value vs a live one)
        if self._latest is not None:
            self.skipped += 1
        self._latest = snap
        self._ready.set()

    def latest(self) -> PortfolioSnapshot | None:
        return self._latest or self._current

    async def get(self, timeout: float | None = None) -> PortfolioSnapshot:
        """The newest snapshot not yet taken; waits for one."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        snap, self._latest = self._latest, None
        self._ready.clear()
        assert snap is not None
        self._current = snap
        return snap

    def __aiter__(self) -> AsyncIterator[PortfolioSnapshot]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[PortfolioSnapshot]:
        while not self._closed:
            yield await self.get()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._hub._release(self)

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


LOST_REDIS = (aioredis.ConnectionError, aioredis.TimeoutError, OSError)
# A lost subscription is tried again after 0.1 s, 0.2 s, 0.4 s ... at most 5 s apart.
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.1, 5.0


class PortfolioSubscriber:
    """One Redis pub/sub connection serving many local listeners.

    `pattern=False` subscribes each watched account's channel explicitly (right for a replica that
    watches a small part of many accounts); `pattern=True` takes `portfolio:*` once and dispatches
    locally (right when one process watches most of them). Either way the interest keys of watched
    accounts are refreshed every third of their TTL, and a lost connection is re-established with
    every channel resubscribed.
    """

    def __init__(self, url: str, *, interest_ttl_s: float = 30.0, pattern: bool = False) -> None:
        self.url = url
        self.interest_ttl_s = interest_ttl_s
        self.pattern = pattern
        self.received = 0
        self.malformed = 0
        self.reconnects = 0
        self._client = connect(url)
        self._pubsub: aioredis.client.PubSub | None = None
        self._listeners: dict[str, set[Listener]] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._control = f"clera:subscriber:{uuid.uuid4().hex}"

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    def channels(self) -> set[str]:
        return {portfolio_channel(a) for a in self._listeners}

    async def start(self) -> None:
        await self._connect()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._keep_interest())]

    async def _connect(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._control)  # a connection with something to read from the start
        if self.pattern:
            await pubsub.psubscribe(PORTFOLIO_PATTERN)
        elif self._listeners:
            await pubsub.subscribe(*self.channels())
        self._pubsub = pubsub

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self._client.aclose()

    async def listen(self, account_id: str) -> Listener:
        """A listener that first gets the account's last snapshot (if any), then live ones."""
        listener = Listener(self, account_id)
        async with self._lock:
            first = account_id not in self._listeners
            self._listeners.setdefault(account_id, set()).add(listener)
            if first:
                await register_interest(self._client, [account_id], self.interest_ttl_s)
                if not self.pattern and self._pubsub is not None:
                    await self._pubsub.subscribe(portfolio_channel(account_id))
        last = (await read_last_snapshots(self._client, [account_id])).get(account_id)
        if last is not None:
            listener.offer(last)
        return listener

    async def _release(self, listener: Listener) -> None:
        async with self._lock:
            group = self._listeners.get(listener.account_id)
            if group is None:
                return
            group.discard(listener)
            if not group:
                del self._listeners[listener.account_id]
                if not self.pattern and self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(portfolio_channel(listener.account_id))

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        account_id = account_of_channel(channel)
        group = self._listeners.get(account_id)
        if not group:
            return
        try:
            snap = snapshot_json_decoder.decode(data)
        except msgspec.DecodeError:
            self.malformed += 1
            return
        self.received += 1
        for listener in list(group):
            listener.offer(snap)

    async def _read(self) -> None:
        while True:
            try:
                await self._read_until_lost()
            except LOST_REDIS as exc:
                log.warning("portfolio subscriber lost Redis (%s); reconnecting", exc)
                await self._reconnect()

    async def _read_until_lost(self) -> None:
        while True:
            assert self._pubsub is not None
            message = await self._pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] in ("message", "pmessage"):
                channel = message["channel"]
                if channel.startswith(PORTFOLIO_PREFIX.encode()):
                    self._dispatch(channel, message["data"])

    async def _reconnect(self) -> None:
        """A new subscription with every wanted channel, tried (on any error) until Redis answers;
        the backoff starts over with each outage."""
        async with self._lock:
            if self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()  # its connection is dead: hand it back before taking another
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=RECONNECT_FIRST_S, max=RECONNECT_MAX_S),
            before_sleep=before_sleep_log(log, logging.DEBUG),
        ):
            with attempt:
                async with self._lock:
                    await self._connect()
        self.reconnects += 1

    async def _keep_interest(self) -> None:
        while True:
            await asyncio.sleep(self.interest_ttl_s / 3)
            with contextlib.suppress(aioredis.RedisError, OSError):
                await register_interest(self._client, list(self._listeners), self.interest_ttl_s)
