"""Checks every feed applies before a price may become a `Tick`.

A bad price that slipped through would be multiplied into thousands of account values, so the
rule is the same for every source: finite, strictly positive numbers and plausible ticker symbols.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TypeGuard

# Upper-case tickers as exchanges and Alpaca write them: letters, digits, '.', '/', '-' (BRK.B, BF-B).
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9./-]{0,14}$")


def is_price(value: object) -> TypeGuard[float]:
    """A finite number > 0 (bools and strings are not prices)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def is_symbol(value: object) -> bool:
    return isinstance(value, str) and _SYMBOL.match(value) is not None


def split_symbols(symbols: Iterable[object] | str) -> tuple[list[str], list[str]]:
    """(well-formed symbols, the rest as strings), de-duplicated, order kept; a lone str is one symbol."""
    good: dict[str, None] = {}
    bad: dict[str, None] = {}
    for s in [symbols] if isinstance(symbols, str) else symbols:
        (good if is_symbol(s) else bad)[s if isinstance(s, str) else repr(s)] = None
    return list(good), list(bad)
