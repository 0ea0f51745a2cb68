"""The WebSocket frames of `/ws/portfolio`: a snapshot as today's frontend reads it, and control frames.

A snapshot frame is built once per snapshot per replica, whatever the number of its watchers.
"""

from __future__ import annotations

import datetime as dt
import functools
import math

import msgspec

from engine.wire import json_encoder


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return dt.datetime.fromtimestamp(second, dt.UTC).isoformat()


def iso_time(ts: float) -> str:
    """`datetime.fromtimestamp(ts, UTC).isoformat()`, to the character (microseconds rounded half to
    even, none shown when zero), with the date and time of day formatted once per second: every
    snapshot frame carries one, and the datetime round trip was a quarter of building a frame."""
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second = _iso_second(int(whole))
    return f"{second[:-6]}.{micros:06d}{second[-6:]}" if micros else second


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


def snapshot_frame(raw: bytes) -> tuple[int, bytes]:
    """(seq, frame) for a snapshot as stored in Redis: the fields today's frontend reads, beside the
    full snapshot (additive: nothing it reads changed). The snapshot's JSON is spliced in as it came,
    so a busy replica decodes a few fields per update instead of re-encoding every position. The frame
    is the UTF-8 text a socket sends: the native server writes it as is, without decoding it per socket.
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
        timestamp=iso_time(head.publish_ts or head.as_of),
        source=head.source,
    )
    return head.seq, json_encoder.encode(legacy)[:-1] + b',"snapshot":' + raw.strip() + b"}"


def control_frame(obj: dict[str, object]) -> bytes:
    return json_encoder.encode(obj)


def error_frame(code: str, message: str) -> bytes:
    return control_frame({"type": "error", "error": {"code": code, "message": message, "details": None}})
