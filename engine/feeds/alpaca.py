"""Live trades from Alpaca through alpaca-py's `StockDataStream`, on one upstream connection.

alpaca-py's `run()` owns an event loop (`asyncio.run`), so the stream (`alpaca_stream`) lives on its
own thread; its `subscribe_*` calls block on that loop, so they run on a single control thread (which
also keeps subscribe/unsubscribe in order). Trades cross to the consumer's event loop through a
locked list and one `call_soon_threadsafe` wake-up per batch. Reconnection and its jittered backoff
and the silence watchdog (`data_timeout`) are the SDK's own; this module adds what the SDK lacks:
it counts connections, screens frames, and attaches previous closes (`alpaca_closes`, REST).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import AsyncIterator, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed

from engine import calendar
from engine.feeds.alpaca_closes import FETCH_ERRORS, PrevCloses
from engine.feeds.alpaca_stream import AlpacaStream
from engine.feeds.base import FeedStatus
from engine.feeds.validate import is_price, split_symbols
from engine.types import Tick

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")
EMPTY_FRAME = msgpack.packb([])
REFETCH_RETRY_S = 5.0  # a previous close not found is asked for again by a trade at most this often
MAX_BUFFER = 200_000  # ticks held for a stalled consumer before conflating to the latest per symbol


class AlpacaFeed:
    """Trades for the subscribed symbols, each with the previous session's close.

    `subscribe` does blocking network I/O (one snapshot request for the new symbols, bounded by
    `rest_timeout`): call it from a worker thread (`asyncio.to_thread`) when on an event loop.
    Symbols the snapshot endpoint does not know are returned as unknown and not subscribed.
    """

    source = "alpaca"

    def __init__(
        self,
        key: str,
        secret: str,
        feed: str = "iex",
        stream_url: str | None = None,
        data_url: str | None = None,
        data_timeout: float | None = 30.0,
        *,
        sandbox: bool = False,
        use_basic_auth: bool = False,
        rest_timeout: float = 10.0,
    ) -> None:
        data_feed = DataFeed(feed)
        if stream_url is None and sandbox:
            stream_url = f"wss://stream.data.sandbox.alpaca.markets/v2/{data_feed.value}"
        params: dict[str, Any] = {"ping_interval": 10, "ping_timeout": 180, "max_queue": 1024}
        if use_basic_auth:  # broker-partner keys authenticate the handshake with Basic auth
            token = base64.b64encode(f"{key}:{secret}".encode()).decode()
            params["extra_headers"] = {"Authorization": f"Basic {token}"}
        self._stream = AlpacaStream(
            self, api_key=key, secret_key=secret, feed=data_feed, url_override=stream_url,
            data_timeout=data_timeout, websocket_params=params,
        )
        self._closes = PrevCloses(key, secret, data_feed, data_url=data_url, sandbox=sandbox,
                                  use_basic_auth=use_basic_auth, timeout=rest_timeout)
        self._control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alpaca-control")
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._prev: dict[str, tuple[str, float]] = {}  # symbol -> (session, previous close)
        self._pending: dict[str, tuple[float, float, float, str]] = {}  # latest trade awaiting its prev close
        self._refetch_after = 0.0
        self._refetch_queued = False
        self._window: tuple[float, float, str] = (0.0, 0.0, "")  # (after, until] unix -> session
        self._buffer: list[Tick] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._connected = False
        self._authenticated_ok = True
        self._error: str | None = None
        self._auth_count = 0
        self._ticks = 0
        self._rejected = 0
        self._last_data_ts: float | None = None

    # --- hooks the stream calls (`alpaca_stream.StreamHooks`), on its thread -----------------
    def screen(self, raw: Any) -> Any:
        """Counts frames the SDK would drop or choke on; returns what the SDK may safely read."""
        try:
            msgs = msgpack.unpackb(raw)
        except Exception:  # noqa: BLE001  (whatever the bytes are, a frame msgpack cannot read is counted and dropped)
            self.reject()
            return EMPTY_FRAME
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            self.reject()
            return EMPTY_FRAME
        headless = sum(1 for m in msgs if m.get("T") == "t" and "S" not in m)  # the SDK skips these unseen
        if headless:
            self.reject(headless)
        return raw

    def reject(self, n: int = 1) -> None:
        with self._lock:
            self._rejected += n

    def authenticated(self) -> None:
        with self._lock:
            self._auth_count += 1
            self._connected = True
            self._authenticated_ok = True
            self._error = None

    def auth_failed(self, code: object, msg: object) -> None:
        with self._lock:
            self._authenticated_ok = False
            self._error = f"Alpaca market data auth failed ({code}: {msg}); check the API key and secret"
        log.error("%s", self._error)

    def upstream_error(self, code: object, msg: object) -> None:
        with self._lock:
            self._error = f"Alpaca stream error {code}: {msg}"

    def disconnected(self) -> None:
        with self._lock:
            self._connected = False

    async def _on_trade(self, msg: dict[str, Any]) -> None:
        symbol, price, stamp, size = msg.get("S"), msg.get("p"), msg.get("t"), msg.get("s", 0)
        if not is_price(price) or not isinstance(stamp, msgpack.Timestamp) or not (
            size == 0 or is_price(size)
        ):
            self.reject()
            return
        ts = stamp.to_unix()
        session = self._session_of(ts)
        with self._lock:
            if symbol not in self._wanted:
                self._rejected += 1
                return
            known = self._prev.get(symbol)
            if known is None or known[0] != session:  # new trading day: its previous close is not known yet
                self._pending[symbol] = (float(price), float(size), ts, session)
                queue = not self._refetch_queued and time.monotonic() >= self._refetch_after
                self._refetch_queued |= queue
            else:
                self._emit(Tick(symbol, float(price), known[1], ts, session, self.source, float(size)))
                queue = False
        if queue:
            self._submit(self._refetch)

    def _emit(self, tick: Tick) -> None:
        """Hands a tick to the consumer's loop; call with the lock held."""
        self._buffer.append(tick)
        self._ticks += 1
        self._last_data_ts = time.time()
        if len(self._buffer) > MAX_BUFFER:
            self._buffer = list({t.symbol: t for t in self._buffer}.values())
        if len(self._buffer) == 1:
            self._notify()

    def _notify(self) -> None:
        """Wakes `batches()` on its own loop (from any thread); a consumer loop that is gone is ignored."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
                loop.call_soon_threadsafe(wake.set)

    def _session_of(self, ts: float) -> str:
        """Trading day of a trade: its New York date (pre- and after-hours trades count towards that
        day, as most apps show them), or the next session on a day the market is closed. Cached per day."""
        after, until, session = self._window
        if after <= ts < until:
            return session
        day = dt.datetime.fromtimestamp(ts, NEW_YORK).date()
        start = dt.datetime.combine(day, dt.time(0), NEW_YORK).timestamp()
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), NEW_YORK).timestamp()
        label = (day if calendar.is_trading_day(day) else calendar.next_trading_day(day)).isoformat()
        self._window = (start, end, label)
        return label

    # --- previous closes (control thread) ---------------------------------------------------
    def _fetch_failed(self, exc: Exception) -> None:
        status = exc.status_code if isinstance(exc, APIError) else None
        if status in (401, 403):
            self.auth_failed(f"HTTP {status} from the snapshot endpoint", exc)
        else:
            with self._lock:
                self._error = f"previous closes unavailable ({exc}); retried when trades arrive"

    def _refetch(self) -> None:
        with self._lock:
            self._refetch_queued = False
            wanted = {s: p for s, p in self._pending.items() if s in self._wanted}
        by_session: dict[str, list[str]] = {}
        for symbol, (_, _, _, session) in wanted.items():
            by_session.setdefault(session, []).append(symbol)
        for session, symbols in by_session.items():
            try:
                found = self._closes.fetch(symbols, dt.date.fromisoformat(session))
            except FETCH_ERRORS as exc:
                self._fetch_failed(exc)
                with self._lock:
                    self._refetch_after = time.monotonic() + REFETCH_RETRY_S
                continue
            with self._lock:
                if len(found) < len(symbols):  # no snapshot for some: don't ask again on every trade
                    self._refetch_after = time.monotonic() + REFETCH_RETRY_S
                for symbol, value in found.items():
                    self._prev[symbol] = (session, value)
                    pending = self._pending.get(symbol)
                    if pending is not None and pending[3] == session and symbol in self._wanted:
                        del self._pending[symbol]
                        price, size, ts, _ = pending
                        self._emit(Tick(symbol, price, value, ts, session, self.source, size))

    # --- the Feed port ----------------------------------------------------------------------
    def subscribe(self, symbols: Collection[str]) -> list[str]:
        good, bad = split_symbols(symbols)
        with self._lock:
            new = [s for s in good if s not in self._wanted]
        unknown = list(bad)
        if new:
            session = dt.date.fromisoformat(self._session_of(time.time()))
            try:
                found = self._closes.fetch(new, session)
            except FETCH_ERRORS as exc:
                # Data host unreachable or refusing: subscribe anyway; closes are fetched when trades arrive.
                self._fetch_failed(exc)
                found, accepted = {}, new
            else:
                accepted = [s for s in new if s in found]
                unknown += [s for s in new if s not in found]
            with self._lock:
                for symbol, value in found.items():
                    self._prev[symbol] = (session.isoformat(), value)
                self._wanted.update(accepted)
            if accepted:
                self._submit(self._subscribe_upstream, accepted)
        with self._lock:
            self._rejected += len(unknown)
        return unknown

    def _subscribe_upstream(self, symbols: list[str]) -> None:
        self._stream.add_trades(self._on_trade, symbols)
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._stream.run, name="alpaca-stream", daemon=True)
            self._thread.start()

    def unsubscribe(self, symbols: Collection[str]) -> None:
        with self._lock:
            gone = [s for s in split_symbols(symbols)[0] if s in self._wanted]
            self._wanted.difference_update(gone)
            for s in gone:
                self._prev.pop(s, None)
                self._pending.pop(s, None)
        if gone:
            self._submit(self._stream.drop_trades, gone)

    def _submit(self, job: Any, *args: Any) -> None:
        """Runs `job` on the control thread, in order; after close() there is nothing left to do."""
        try:
            self._control.submit(job, *args)
        except RuntimeError:
            log.debug("feed closed: %s dropped", getattr(job, "__name__", job))

    async def batches(self) -> AsyncIterator[list[Tick]]:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if batch:
                yield batch
                continue
            if self._closed:
                return
            await self._wake.wait()
            self._wake.clear()

    async def close(self) -> None:
        self._closed = True
        self._notify()
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._control.shutdown(wait=True)  # pending subscribes first: none may start a thread after this
        self._stream.halt(timeout=5)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def running(self) -> bool:
        """Whether the stream thread is alive (it ends on close() or on an auth failure)."""
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> FeedStatus:
        with self._lock:
            return FeedStatus(
                source=self.source,
                connected=self._connected,
                authenticated=self._authenticated_ok,
                error=self._error,
                subscribed=len(self._wanted),
                ticks=self._ticks,
                rejected=self._rejected,
                reconnects=max(self._auth_count - 1, 0),
                last_data_ts=self._last_data_ts,
            )

