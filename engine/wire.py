"""The one JSON encoder of everything the API and the WebSocket send: Decimals in positional notation.

msgspec writes a Decimal with `str()`, so a quantity that went through `normalize()` or some
multiplication goes out as `"3E+2"`, where Alpaca's wire format (and every client) has `"300"`.
msgspec encodes Decimals natively and never passes them to an `enc_hook`, so the fix cannot be a
hook: an object whose type may hold a Decimal is first turned into builtins with its Decimals kept
(`to_builtins(builtin_types=(Decimal,))`) and each one written with `format(d, "f")`. Whether a
type may hold one is read once per type from its msgspec schema, so the realtime path's Structs
(floats only) go straight to msgspec at full speed.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import msgspec.inspect as mi

_SCALARS = (str, int, float, bool, type(None))
_NESTED = frozenset((dict, list, Decimal))  # what `to_builtins` leaves that may hold or be a Decimal


def positional(value: Decimal) -> str:
    """`Decimal("3E+2")` -> `"300"`, `Decimal("1E-7")` -> `"0.0000001"`: the digits it holds, never an exponent."""
    return format(value, "f")


def wire_data(obj: Any, decimal: Callable[[Decimal], str] = positional) -> Any:
    """`obj` as JSON builtins (Structs become dicts), every Decimal written by `decimal`."""

    def convert(value: Any) -> Any:  # type() tests: a list of orders has thousands of plain values
        kind = type(value)
        if kind is dict:
            return {k: convert(v) if type(v) in _NESTED else v for k, v in value.items()}
        if kind is list:
            return [convert(v) if type(v) in _NESTED else v for v in value]
        return decimal(value) if kind is Decimal else value

    return convert(msgspec.to_builtins(obj, builtin_types=(Decimal,)))


def _schema_holds_decimal(node: mi.Type, seen: set[int]) -> bool:
    if isinstance(node, (mi.DecimalType, mi.AnyType, mi.CustomType)):
        return True
    if id(node) in seen:  # a recursive Struct: its fields are being looked at already
        return False
    seen.add(id(node))
    for name in node.__struct_fields__:
        value = getattr(node, name)
        children = value if isinstance(value, tuple) else (value,)
        for child in children:
            if isinstance(child, mi.Field):
                child = child.type
            if isinstance(child, mi.Type) and _schema_holds_decimal(child, seen):
                return True
    return False


def may_hold_decimal(cls: type) -> bool:
    """Whether an instance of `cls` can contain a Decimal anywhere (dicts, lists and `Any` fields can)."""
    if issubclass(cls, _SCALARS):
        return False
    if not issubclass(cls, msgspec.Struct):
        return True
    return _schema_holds_decimal(mi.type_info(cls), set())


class WireEncoder:
    """`encode(obj) -> bytes`, as `msgspec.json.Encoder`, with every Decimal in positional notation."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._holds: dict[type, bool] = {}  # per type, so a snapshot costs one dict lookup more than msgspec

    def encode(self, obj: Any) -> bytes:
        cls = type(obj)
        holds = self._holds.get(cls)
        if holds is None:
            holds = self._holds[cls] = may_hold_decimal(cls)
        return self._encoder.encode(wire_data(obj) if holds else obj)


json_encoder = WireEncoder()
