"""What travels between the realtime hops: ticks as columns, batched per destination shard.

Batches are msgpack blobs of `ColumnBatch` (ticks as columns: a shard turns them into numpy arrays
without building an object per tick). A blob that does not decode is `None` to its reader, which
counts it; it never stops a shard.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine.subscriptions import shard_of
from engine.types import Tick, msgpack_encoder


class PriceColumns(msgspec.Struct, array_like=True, gc=False):
    """Ticks of one session and source as columns: the symbol shard -> portfolio shard format,
    which a portfolio shard turns into numpy arrays without touching each tick in Python."""

    symbols: list[str]
    price: list[float]
    prev_close: list[float]
    ts: list[float]
    session: str
    source: str


class ColumnBatch(msgspec.Struct, array_like=True, gc=False):
    columns: list[PriceColumns]
    ingest_ts: float


_column_batch_decoder = msgspec.msgpack.Decoder(ColumnBatch)


def encode_columns(ticks: list[Tick], ingest_ts: float) -> bytes:
    groups: dict[tuple[str, str], list[Tick]] = {}
    for tick in ticks:
        groups.setdefault((tick.session, tick.source), []).append(tick)
    columns = [
        PriceColumns(
            [t.symbol for t in group], [t.price for t in group], [t.prev_close for t in group],
            [t.ts for t in group], session, source,
        )
        for (session, source), group in groups.items()
    ]
    return msgpack_encoder.encode(ColumnBatch(columns, ingest_ts))


def decode_columns(blob: object) -> ColumnBatch | None:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        return None
    try:
        return _column_batch_decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class TickBatcher:
    """Ticks collected per destination shard, as columns, until a flush (by timer, or when one is full)."""

    def __init__(self, destinations: int, batch_max: int) -> None:
        self.destinations = destinations
        self.batch_max = batch_max
        self._groups: list[list[PriceColumns]] = [[] for _ in range(destinations)]
        self._counts = [0] * destinations
        self._ingest: list[float] = [0.0] * destinations
        self._route: dict[str, int] = {}

    def add(self, ticks: Iterable[Tick], ingest_ts: float) -> bool:
        """Route by symbol; returns True when some destination reached `batch_max`."""
        route, all_groups, counts, n = self._route, self._groups, self._counts, self.destinations
        for tick in ticks:
            dest = route.get(tick.symbol)
            if dest is None:
                dest = route[tick.symbol] = shard_of(tick.symbol, n)
            groups = all_groups[dest]
            if not groups:
                self._ingest[dest] = ingest_ts
            if not groups or groups[-1].session != tick.session or groups[-1].source != tick.source:
                groups.append(PriceColumns([], [], [], [], tick.session, tick.source))
            g = groups[-1]
            g.symbols.append(tick.symbol)
            g.price.append(tick.price)
            g.prev_close.append(tick.prev_close)
            g.ts.append(tick.ts)
            counts[dest] += 1
        return max(counts) >= self.batch_max

    def pending(self) -> int:
        return sum(self._counts)

    def sizes(self) -> list[int]:
        """Ticks waiting per destination (what the next `take` sends each)."""
        return list(self._counts)

    def take(self) -> dict[int, bytes]:
        out = {
            d: msgpack_encoder.encode(ColumnBatch(groups, self._ingest[d]))
            for d, groups in enumerate(self._groups)
            if groups
        }
        self._groups = [[] for _ in range(self.destinations)]
        self._counts = [0] * self.destinations
        return out


def keep_recent(window: list[float], value: float, size: int = 512) -> None:
    """Append to a shard's window of recent delays (its `status`), newest last, at most `size` kept."""
    window.append(round(value, 2))
    if len(window) > size:
        del window[: len(window) - size]
