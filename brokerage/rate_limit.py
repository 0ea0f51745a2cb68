"""A sliding-window request limiter shared by every caller of one API in a process.

FMP counts requests per minute; at most `limit` may happen in any `window_s` seconds. A request
holds a slot from before it is sent until its answer is back, and the window of a finished request
is counted from its end: the server saw it arrive no later than that, so however the network delays
requests, the server never sees more than `limit` arrivals in any window. A 429's `Retry-After`
pauses every caller of the limiter, not only the one that got it.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class RateLimited(TimeoutError):
    """No slot within the caller's wait: the API's budget is spent for now."""


class WindowLimiter:
    def __init__(self, limit: int, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a limiter needs limit >= 1 and window_s > 0")
        self.limit, self.window_s = limit, window_s
        self._clock = clock
        self._ended: collections.deque[float] = collections.deque()
        self._in_flight = 0
        self._paused_until = 0.0
        self._cond = threading.Condition()

    def _wait_needed(self, now: float) -> float:
        """Seconds until a slot may open (0: one is free now); called with the lock held."""
        while self._ended and self._ended[0] <= now - self.window_s:
            self._ended.popleft()
        if now < self._paused_until:
            return self._paused_until - now
        if len(self._ended) + self._in_flight < self.limit:
            return 0.0
        if self._ended:
            return self._ended[0] + self.window_s - now
        return self.window_s  # every slot is in flight: woken when one ends

    def acquire(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while (wait := self._wait_needed(now := self._clock())) > 0:
                if deadline is not None and now + wait > deadline:
                    raise RateLimited(f"no request slot free within {timeout:.1f} s")
                self._cond.wait(wait)
            self._in_flight += 1

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._ended.append(self._clock())
            self._cond.notify_all()

    @contextlib.contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[None]:
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    def pause(self, seconds: float) -> None:
        """Nobody starts a request for `seconds` (the API asked us to wait)."""
        with self._cond:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
