"""Wire types of the realtime path, with their JSON and msgpack codecs.

Ticks travel in large batches between actors, so they are array-like Structs (msgpack arrays, no
field names on the wire, no GC tracking). Holdings carry Decimal (ledger truth); the valuation and
the snapshots use floats rounded to cents for display, as docs/architecture.md "Money and time" allows.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Source = Literal["replay", "simulated", "alpaca"]
PRICE_DECIMALS = 4  # prices as the market quotes them (NYSE's finest increment, below $1); values go to cents
SOURCES: tuple[str, ...] = ("replay", "simulated", "alpaca")


class Tick(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """One trade price. `prev_close` is the previous session's close for `session` (ISO date)."""

    symbol: str
    price: float
    prev_close: float
    ts: float  # event time, unix seconds
    session: str  # trading day the tick belongs to, YYYY-MM-DD
    source: str
    size: float = 0.0


class Position(msgspec.Struct, frozen=True):
    """A holding for valuation.

    `start_qty` is what was held at the start of `AccountHoldings.session`; `net_cost_today` is
    what today's buys cost minus what today's sells brought in. Day change of the position is
    `qty * last - start_qty * prev_close - net_cost_today`, so shares bought today count from their
    cost, never from yesterday's close.
    """

    symbol: str
    qty: Decimal
    start_qty: Decimal = Decimal(0)
    net_cost_today: Decimal = Decimal(0)
    avg_entry_price: Decimal = Decimal(0)


class AccountHoldings(msgspec.Struct, frozen=True):
    """Cash and positions of one account as the position source knows them at `as_of`.

    `deposits_today` is net cash moved in (+) or out (-) by transfers during `session`: it is
    part of the value but never part of the day's gain.
    """

    account_id: str
    cash: Decimal
    positions: list[Position] = []
    session: str = ""
    deposits_today: Decimal = Decimal(0)
    as_of: float = 0.0


class PositionValue(msgspec.Struct, frozen=True, gc=False):
    symbol: str
    qty: float
    last_price: float
    prev_close: float
    market_value: float
    day_change: float
    day_change_pct: float


class PortfolioSnapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a client sees of one account at one moment.

    Timestamps (unix seconds): `as_of` is the event time of the newest tick included,
    `ingest_ts` when that tick entered the engine, `publish_ts` when the snapshot was published.
    """

    account_id: str
    seq: int
    as_of: float
    ingest_ts: float
    publish_ts: float
    total_value: float
    cash: float
    positions_value: float
    day_change: float
    day_change_pct: float
    positions: list[PositionValue]
    session: str = ""
    source: str = ""


class LastPrice(msgspec.Struct, frozen=True):
    """The value of Redis `price:{symbol}`, read by Ray-free code (paper broker fills, agent tools)."""

    symbol: str
    last: float
    prev_close: float
    ts: float
    session: str
    source: str


msgpack_encoder = msgspec.msgpack.Encoder(decimal_format="string")
snapshot_json_decoder = msgspec.json.Decoder(PortfolioSnapshot)
snapshot_msgpack_decoder = msgspec.msgpack.Decoder(PortfolioSnapshot)
ticks_decoder = msgspec.msgpack.Decoder(list[Tick])
holdings_json_decoder = msgspec.json.Decoder(list[AccountHoldings])
holdings_msgpack_decoder = msgspec.msgpack.Decoder(list[AccountHoldings])
last_price_json_decoder = msgspec.json.Decoder(LastPrice)
