"""The publishing schedule of a portfolio shard: which changed accounts to snapshot now.

Kept apart from the valuation book: the book says what changed, this says when it goes out.
"""

from __future__ import annotations

import numpy as np

from engine.arrays import grown


class Coalescer:
    """Which changed accounts to snapshot now.

    Accounts somebody watches get at most `publish_hz` snapshots a second (latest wins: a snapshot
    is built from the state when it is due, so skipped intermediate states cost nothing), and all of
    them together at most `budget_per_s`: with more watchers than the budget allows at full rate,
    each gets a proportionally lower rate rather than the shard falling behind on all of them.
    The others only have `portfolio:last` refreshed every `idle_refresh_s`, staggered per account so
    the refresh is a steady trickle rather than a burst that would delay the live ones.
    """

    def __init__(self, publish_hz: float, idle_refresh_s: float, budget_per_s: float = float("inf")) -> None:
        self.fastest_gap = 1.0 / publish_hz
        self.budget_per_s = budget_per_s
        self.min_gap = self.fastest_gap
        self.idle_refresh_s = idle_refresh_s
        self._dirty = np.empty(0, dtype=bool)
        self._live = np.empty(0, dtype=bool)
        self._next_live = np.empty(0)
        self._next_idle = np.empty(0)
        self._written = np.empty(0, dtype=bool)  # had its first idle write
        self._rng = np.random.default_rng(0)

    def _ensure(self, size: int, now: float) -> None:
        old = len(self._dirty)
        if size <= old:
            return
        self._dirty = grown(self._dirty, size, True)
        self._live = grown(self._live, size, False)
        self._next_live = grown(self._next_live, size, 0.0)
        new = len(self._next_idle)
        self._next_idle = grown(self._next_idle, size, 0.0)
        self._written = grown(self._written, size, False)
        # first write soon for everyone, spread over a fraction of the refresh period
        spread = self._rng.random(len(self._next_idle) - new)
        self._next_idle[new:] = now + spread * min(self.idle_refresh_s, 1.0)

    def mark(self, changed: np.ndarray, size: int, now: float) -> None:
        self._ensure(size, now)
        self._dirty[changed] = True

    def set_live(self, live: np.ndarray, size: int, now: float) -> None:
        """Indices of accounts with a live subscriber (replaces the previous set).

        An account that just gained a subscriber is published at once, even unchanged: the
        subscriber may have read `portfolio:last` before this shard's first write of it, and a
        quiet account (cash only, or its symbols idle) would otherwise leave it blank.
        """
        self._ensure(size, now)
        newly = np.zeros(len(self._live), dtype=bool)
        newly[live] = True
        self._dirty |= newly & ~self._live
        self._live = newly
        self.min_gap = max(self.fastest_gap, len(live) / self.budget_per_s)

    def due(self, now: float, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(live accounts to publish, idle accounts whose last value to refresh), both marked clean."""
        self._ensure(size, now)
        dirty, live = self._dirty[:size], self._live[:size]
        publish = np.flatnonzero(dirty & live & (self._next_live[:size] <= now))
        refresh = np.flatnonzero(dirty & ~live & (self._next_idle[:size] <= now))
        self._dirty[publish] = False
        self._dirty[refresh] = False
        self._next_live[publish] = now + self.min_gap
        # after the first write, each account's refresh lands at a random point of the period,
        # so the accounts first written together do not all come due together again
        first = ~self._written[refresh]
        self._next_idle[refresh] = now + self.idle_refresh_s * np.where(first, self._rng.random(len(refresh)), 1.0)
        self._written[refresh] = True
        return publish, refresh

    def pending(self, size: int) -> int:
        return int(self._dirty[:size].sum())

