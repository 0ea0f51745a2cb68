"""What every engine actor shares: its process set-up, the names of the named actors and bounded
fire-and-forget sends."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayError

from actors import metrics as ray_metrics
from engine import logs
from engine.config import ConfigError, Settings

log = logging.getLogger(__name__)

MAX_INFLIGHT = 4  # calls in flight per destination before the sender waits (back-pressure)
CALL_ERRORS = (RayError, ValueError)  # actor down or restarting, or the call itself failed


def setup_process(settings: Settings) -> None:
    """What a Ray process of the system does first (actors, Serve replicas): the engine's metrics go
    to Ray's, its logs take CLERA_LOG_FORMAT."""
    ray_metrics.install()
    logs.configure(settings.log_format)


def shared_redis_url(settings: Settings) -> str:
    """The Redis every engine process shares, read from the actor's settings, never passed as an argument
    of its own: a URL with a password crosses no process boundary (each process has its own)."""
    url = settings.redis_external_url
    if url is None:
        raise ConfigError("an engine actor needs REDIS_URL in its settings (start_topology puts it there)")
    return url


def market_feed_name() -> str:
    return "clera.market_feed"


def symbol_shard_name(index: int) -> str:
    return f"clera.symbol_shard.{index}"


def portfolio_shard_name(index: int) -> str:
    return f"clera.portfolio_shard.{index}"


def position_sync_name() -> str:
    return "clera.position_sync"


def lookup(name: str, namespace: str) -> ray.actor.ActorHandle[Any] | None:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


class Outbox:
    """Sends to numbered actors without waiting for each call, but never more than MAX_INFLIGHT
    unanswered calls to one of them: a slow or restarting receiver slows the sender instead of
    letting a queue grow without bound. Calls to an actor that is down are dropped and counted
    (the receiver rebuilds its state when it comes back)."""

    def __init__(self, name_of: Callable[[int], str], namespace: str, max_inflight: int = MAX_INFLIGHT) -> None:
        self._name_of = name_of
        self._namespace = namespace
        self._max = max_inflight
        self._handles: dict[int, ray.actor.ActorHandle[Any]] = {}
        self._inflight: dict[int, collections.deque[ray.ObjectRef[Any]]] = collections.defaultdict(collections.deque)
        self.sent = 0
        self.failed = 0

    def handle(self, dest: int) -> ray.actor.ActorHandle[Any] | None:
        handle = self._handles.get(dest)
        if handle is None:
            handle = lookup(self._name_of(dest), self._namespace)
            if handle is not None:
                self._handles[dest] = handle
        return handle

    async def send(self, dest: int, method: str, *args: object) -> None:
        handle = self.handle(dest)
        if handle is None:
            self.failed += 1
            return
        queue = self._inflight[dest]
        queue.append(getattr(handle, method).remote(*args))
        self.sent += 1
        while len(queue) > self._max:
            await self._settle(dest, queue.popleft())

    async def call(self, dest: int, method: str, *args: object) -> Any:
        """A call whose answer is needed (typed as the remote method's); None when the actor is unavailable."""
        handle = self.handle(dest)
        if handle is None:
            return None
        try:
            return await getattr(handle, method).remote(*args)
        except CALL_ERRORS as exc:
            log.warning("%s.%s failed: %s", self._name_of(dest), method, exc)
            self._handles.pop(dest, None)
            return None

    async def _settle(self, dest: int, ref: ray.ObjectRef[Any]) -> None:
        try:
            await ref
        except CALL_ERRORS as exc:
            self.failed += 1
            self._handles.pop(dest, None)
            log.warning("call to %s lost: %s", self._name_of(dest), exc)
