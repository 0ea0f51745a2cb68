"""Live trades from Alpaca through alpaca-py's `StockDataStream`, on one upstream connection.

alpaca-py's `run()` owns an event loop (`asyncio.run`), so the stream lives on its own thread; its
`subscribe_*` calls block on that loop, so they run on a single control thread (which also keeps
subscribe/unsubscribe in order). Trades cross to the consumer's event loop through a locked list
and one `call_soon_threadsafe` wake-up per batch. Reconnection and its jittered backoff and the
silence watchdog (`data_timeout`) are the SDK's own; this module only adds what the SDK lacks:
it stops on an auth failure instead of retrying it forever, counts connections, screens frames,
and attaches previous closes from the snapshot REST endpoint.
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
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.models import Snapshot
from alpaca.data.requests import StockSnapshotRequest

from engine import calendar
from engine.feeds.base import FeedStatus
from engine.feeds.validate import is_price, split_symbols
from engine.types import Tick

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")
FATAL_AUTH_CODES = {401, 402, 403, 404}  # not authenticated / auth failed / ...: retrying cannot help
EMPTY_FRAME = msgpack.packb([])
SNAPSHOT_CHUNK = 500  # symbols per snapshot request (Alpaca's URL length and page limits)
REFETCH_RETRY_S = 5.0
FETCH_ERRORS = (APIError, requests.RequestException, ValueError)  # ValueError: pydantic on a bad body
MAX_BUFFER = 200_000  # ticks held for a stalled consumer before conflating to the latest per symbol


class _TimeoutSession(requests.Session):
    """alpaca-py's REST client sends no timeout; a hung data host must not hang a subscribe."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


class _Stream(StockDataStream):
    """`StockDataStream` with the hooks the feed needs (the SDK's reconnect loop is kept as is)."""

    def __init__(self, owner: AlpacaFeed, **kwargs: Any) -> None:
        super().__init__(raw_data=True, **kwargs)
        self._owner = owner
        self._shutdown = False

    async def _connect(self) -> None:
        if self._shutdown:  # closed before the SDK's loop started: make its retry loop end
            await self.stop_ws()
            raise ValueError("stream closed")
        await super()._connect()
        ws: Any = self._ws  # the SDK declares it None; connected, it is a websockets client
        receive = ws.recv

        async def screened_recv() -> Any:
            return self._owner._screen(await receive())

        ws.recv = screened_recv

    async def _auth(self) -> None:
        """The SDK's auth exchange, but an auth error stops the stream instead of being retried forever."""
        ws: Any = self._ws  # as in `_connect`
        await ws.send(msgpack.packb({"action": "auth", "key": self._api_key, "secret": self._secret_key}))
        reply = msgpack.unpackb(await ws.recv())
        first = reply[0] if isinstance(reply, list) and reply and isinstance(reply[0], dict) else {}
        if first.get("T") == "error":
            code, msg = first.get("code"), first.get("msg", "auth failed")
            if code in FATAL_AUTH_CODES:
                self._owner._auth_failed(code, msg)
                log.error("Alpaca market data stream stopped: retrying rejected credentials cannot succeed")
                await self.stop_ws()
            raise ValueError(f"{msg} ({code})")
        if first.get("T") != "success" or first.get("msg") != "authenticated":
            raise ValueError("failed to authenticate")
        self._owner._authenticated()

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind, symbol = msg.get("T"), msg.get("S")
        if kind == "t" and not (isinstance(symbol, str) and symbol in self._handlers["trades"]):
            self._owner._reject()  # a trade for a symbol nobody subscribed
            return
        if kind == "error":
            self._owner._upstream_error(msg.get("code"), msg.get("msg"))
        await super()._dispatch(msg)

    async def close(self) -> None:
        self._owner._disconnected()
        await super().close()

    async def _halt(self) -> None:
        await self.stop_ws()
        if self._ws is not None:  # wakes a pending recv at once instead of after its 5 s poll
            await self._ws.close()

    def halt(self, timeout: float) -> None:
        """Stop from another thread, whatever state the SDK's loop is in."""
        self._shutdown = True
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._halt(), loop).result(timeout)
            except Exception:  # the loop ended meanwhile: nothing left to stop
                log.debug("stream already stopped", exc_info=True)

    def add_trades(self, handler: Any, symbols: list[str]) -> None:
        try:
            self.subscribe_trades(handler, *symbols)
        except Exception:  # socket died mid-send: the handlers are registered, the reconnect resubscribes them
            log.warning("subscribe not sent now; it will be sent on reconnect", exc_info=True)

    def drop_trades(self, symbols: list[str]) -> None:
        try:
            self.unsubscribe_trades(*symbols)
        except Exception:  # the SDK sends before it forgets: forget anyway, or a reconnect would resubscribe
            log.warning("unsubscribe not sent (connection down)", exc_info=True)
            for s in symbols:
                self._handlers["trades"].pop(s, None)


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
        self._stream = _Stream(
            self, api_key=key, secret_key=secret, feed=data_feed, url_override=stream_url,
            data_timeout=data_timeout, websocket_params=params,
        )
        self._rest = StockHistoricalDataClient(key, secret, use_basic_auth=use_basic_auth, url_override=data_url,
                                               sandbox=sandbox)
        self._rest._session = _TimeoutSession(rest_timeout)
        self._data_feed = data_feed
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

    # --- callbacks from the stream thread ---------------------------------------------------
    def _screen(self, raw: Any) -> Any:
        """Counts frames the SDK would drop or choke on; returns what the SDK may safely read."""
        try:
            msgs = msgpack.unpackb(raw)
        except Exception:  # noqa: BLE001 - whatever the decoder raises, the frame is unreadable
            self._reject()
            return EMPTY_FRAME
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            self._reject()
            return EMPTY_FRAME
        headless = sum(1 for m in msgs if m.get("T") == "t" and "S" not in m)  # the SDK skips these unseen
        if headless:
            self._reject(headless)
        return raw

    def _reject(self, n: int = 1) -> None:
        with self._lock:
            self._rejected += n

    def _authenticated(self) -> None:
        with self._lock:
            self._auth_count += 1
            self._connected = True
            self._authenticated_ok = True
            self._error = None

    def _auth_failed(self, code: object, msg: object) -> None:
        with self._lock:
            self._authenticated_ok = False
            self._error = f"Alpaca market data auth failed ({code}: {msg}); check the API key and secret"
        log.error("%s", self._error)

    def _upstream_error(self, code: object, msg: object) -> None:
        with self._lock:
            self._error = f"Alpaca stream error {code}: {msg}"

    def _disconnected(self) -> None:
        with self._lock:
            self._connected = False

    async def _on_trade(self, msg: dict[str, Any]) -> None:
        symbol, price, stamp, size = msg.get("S"), msg.get("p"), msg.get("t"), msg.get("s", 0)
        if not is_price(price) or not isinstance(stamp, msgpack.Timestamp) or not (
            size == 0 or is_price(size)
        ):
            self._reject()
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
    def _fetch_prev_closes(self, symbols: list[str], session: dt.date) -> dict[str, float]:
        """Previous closes as of `session` from the snapshot endpoint; raises on transport/API errors."""
        found: dict[str, float] = {}
        for i in range(0, len(symbols), SNAPSHOT_CHUNK):
            chunk = symbols[i : i + SNAPSHOT_CHUNK]
            snapshots = self._rest.get_stock_snapshot(
                StockSnapshotRequest(symbol_or_symbols=chunk, feed=self._data_feed)
            )
            for symbol, snap in snapshots.items():
                value = _prev_close(snap, session)
                if value is not None:
                    found[symbol] = value
        return found

    def _fetch_failed(self, exc: Exception) -> None:
        status = exc.status_code if isinstance(exc, APIError) else None
        if status in (401, 403):
            self._auth_failed(f"HTTP {status} from the snapshot endpoint", exc)
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
                found = self._fetch_prev_closes(symbols, dt.date.fromisoformat(session))
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
                found = self._fetch_prev_closes(new, session)
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


def _prev_close(snap: Snapshot, session: dt.date) -> float | None:
    """The close of the trading day before `session`: today's daily bar may or may not exist yet."""
    daily, previous = snap.daily_bar, snap.previous_daily_bar
    if daily is not None and daily.timestamp.astimezone(NEW_YORK).date() < session:
        value: float | None = daily.close
    elif previous is not None:
        value = previous.close
    else:  # a first trading day: its open stands in, as in the replay
        value = daily.open if daily is not None else None
    return value if is_price(value) else None
