"""Symbol reference counts and the stable routing of symbols and accounts to shards.

A symbol shard counts, per symbol, the portfolio shards whose accounts hold it. The upstream feed
hears about a symbol only when its count crosses zero: subscribe on the first holder, unsubscribe
when the last one lets go (Alpaca allows one upstream connection; symbols are shared on it).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection


def shard_of(key: str, shards: int) -> int:
    """The shard of a symbol or account: a hash that is the same in every process and run."""
    return zlib.crc32(key.encode()) % shards


class SymbolRefcounts:
    """Which holders (portfolio shards) need which symbols."""

    def __init__(self) -> None:
        self._holders: dict[str, set[int]] = {}
        self._by_holder: dict[int, set[str]] = {}

    def set_holder(self, holder: int, symbols: Collection[str]) -> tuple[list[str], list[str]]:
        """Replace what `holder` needs; returns (symbols now needed by someone, symbols needed by nobody).

        Replacing the whole set (rather than sending diffs) makes the call idempotent, so a
        restarted holder or a retried call cannot leave a count off by one.
        """
        new = set(symbols)
        old = self._by_holder.get(holder, set())
        started = []
        for symbol in sorted(new - old):
            group = self._holders.setdefault(symbol, set())
            if not group:
                started.append(symbol)
            group.add(holder)
        stopped = []
        for symbol in sorted(old - new):
            held = self._holders.get(symbol)
            if held is None:
                continue
            held.discard(holder)
            if not held:
                del self._holders[symbol]
                stopped.append(symbol)
        if new:
            self._by_holder[holder] = new
        else:
            self._by_holder.pop(holder, None)
        return started, stopped

    def by_holder(self) -> dict[int, set[str]]:
        """Each holder's symbols (a live view: do not modify)."""
        return self._by_holder

    def holders(self, symbol: str) -> set[int]:
        return self._holders.get(symbol, set())

    def count(self, symbol: str) -> int:
        return len(self._holders.get(symbol, ()))

    def symbols(self) -> list[str]:
        return sorted(self._holders)
