"""Last prices for Ray-free code: the realtime engine writes Redis `price:{SYMBOL}`, we read it.

A malformed value is treated as "no price" (the order is rejected with that reason) rather than
crashing; an unreachable Redis is `Unavailable`, since then no price can be known at all.
"""

from __future__ import annotations

import logging
from typing import Protocol

import msgspec
import redis

from brokerage.errors import Unavailable
from engine.redis_keys import price_key
from engine.types import LastPrice, last_price_json_decoder

log = logging.getLogger(__name__)


class PriceReader(Protocol):
    def last(self, symbol: str) -> LastPrice | None:
        """The latest known trade price of `symbol` (upper case), or None if nobody has priced it."""
        ...


class RedisPriceReader:
    """Reads `price:{SYMBOL}` (JSON of LastPrice) with the synchronous redis client."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    def last(self, symbol: str) -> LastPrice | None:
        try:
            raw = self._client.get(price_key(symbol))
        except redis.RedisError as exc:
            raise Unavailable(f"price store unreachable: {exc}", code="prices_unavailable") from exc
        if raw is None:
            return None
        try:
            price = last_price_json_decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("ignoring malformed %s: %r", price_key(symbol), raw[:200])
            return None
        if not (price.last > 0 and price.last < float("inf")):
            return None
        return price

    def close(self) -> None:
        self._client.close()
