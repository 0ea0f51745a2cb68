"""A local stand-in for Alpaca's market-data service, for tests through the real alpaca-py client.

One port on 127.0.0.1 serves both halves, like the two Alpaca hosts it replaces:
- the msgpack WebSocket stream (`/v2/iex`, `/v2/sip`): `connected` greeting, key/secret auth
  (success or `402 auth failed`), subscribe/unsubscribe answered with the full current set, and
  trade frames whose `t` is a msgpack Timestamp;
- the REST snapshot call alpaca-py's `StockHistoricalDataClient.get_stock_snapshot` makes
  (`GET /v2/stocks/snapshots?symbols=A,B`), answered from `set_snapshot`;
- the REST daily bars call of `get_stock_bars` (`GET /v2/stocks/bars?symbols=A,B&start=..&end=..`),
  answered from `set_bars` in pages of `bars_page_size` bars linked by `next_page_token`, or with
  `bars_error_status` when a test sets one.

It runs on its own thread and event loop, so a test drives it with plain method calls: push
trades or raw frames, drop the connection, go silent, and read what the client subscribed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

NEW_YORK = dt.timezone(dt.timedelta(hours=-5))  # bar timestamps only need the right calendar date


def _bar(day: dt.date, close: float) -> dict[str, object]:
    stamp = dt.datetime.combine(day, dt.time(0), NEW_YORK).astimezone(dt.UTC)
    return {
        "t": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "o": close, "h": close, "l": close, "c": close, "v": 1000, "n": 10, "vw": close,
    }


def _utc(text: str) -> dt.datetime:
    """An RFC 3339 time or a date from a query; Alpaca reads a time without an offset as UTC."""
    moment = dt.datetime.fromisoformat(text)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


class AlpacaStreamStandIn:
    def __init__(self, key: str = "test-key", secret: str = "test-secret") -> None:
        self.key, self.secret = key, secret
        self.port = 0
        self.connections = 0  # WebSocket connections accepted
        self.open = 0  # connections open now
        self.max_open = 0  # the most ever open at once (Alpaca allows one per key)
        self.auth_attempts = 0
        self.subscribed: set[str] = set()  # trades of the live connection, as the server sees them
        self.actions: list[dict[str, object]] = []  # every client action after auth, in order
        self.snapshot_requests: list[list[str]] = []
        self.snapshot_auth: list[str | None] = []  # Authorization header of each snapshot call
        self._snapshots: dict[str, dict[str, object]] = {}
        self.bars_requests: list[dict[str, str]] = []  # query of each bars call, one value per key
        self.bars_page_size = 10_000
        self.bars_error_status: HTTPStatus | None = None
        self._bars: dict[str, list[tuple[dt.date, float]]] = {}
        self._live: ServerConnection | None = None
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="alpaca-standin", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> AlpacaStreamStandIn:
        self._thread.start()
        self._server = self._call(self._start())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> Server:
        return await serve(self._session, "127.0.0.1", 0, process_request=self._http, ping_interval=None)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v2/iex"

    @property
    def data_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what a test does ------------------------------------------------------------------
    def set_snapshot(self, symbol: str, prev_close: float, session: dt.date, daily_close: float | None = None) -> None:
        """Snapshot for `symbol` as seen during `session`: today's bar dated `session` and the previous
        trading day's bar closing at `prev_close` (a weekday is good enough for a stand-in)."""
        previous = session - dt.timedelta(days=3 if session.weekday() == 0 else 1)
        self._snapshots[symbol] = {
            "dailyBar": _bar(session, daily_close if daily_close is not None else prev_close),
            "prevDailyBar": _bar(previous, prev_close),
        }

    def set_bars(self, symbol: str, closes: list[tuple[dt.date, float]]) -> None:
        """Daily bars of `symbol` (one per day, open=high=low=close), served oldest first."""
        self._bars[symbol] = sorted(closes)

    def push_trades(self, *trades: dict[str, object]) -> None:
        """Send one frame of trades; `t` may be a unix time (sent as a msgpack Timestamp) or anything else."""
        frame = []
        for trade in trades:
            msg = {"T": "t", "i": 1, "x": "V", "s": 100, "c": ["@"], "z": "C", "t": time.time(), **trade}
            if isinstance(msg["t"], (int, float)):
                msg["t"] = msgpack.Timestamp.from_unix(msg["t"])
            frame.append(msg)
        self.push_raw(msgpack.packb(frame))

    def push_raw(self, frame: bytes | str) -> None:
        self._call(self._send(frame))

    def drop(self) -> None:
        """Close the live connection from the server side, as a network drop or a restart would."""
        self._call(self._drop())

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("stand-in condition not reached")
            time.sleep(0.02)

    # --- the protocol ------------------------------------------------------------------------
    async def _send(self, frame: bytes | str) -> None:
        if self._live is None:
            raise RuntimeError("no authenticated client connected")
        await self._live.send(frame)

    async def _drop(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            self.subscribed = set()
            live.transport.abort()  # no close frame: what a dead network looks like to the client

    def _ack(self) -> bytes:
        trades = sorted(self.subscribed)
        return msgpack.packb([{
            "T": "subscription", "trades": trades, "quotes": [], "bars": [], "updatedBars": [],
            "dailyBars": [], "statuses": [], "lulds": [], "corrections": trades, "cancelErrors": trades,
        }])

    async def _session(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self._serve(ws)
        finally:
            self.open -= 1

    async def _serve(self, ws: ServerConnection) -> None:
        await ws.send(msgpack.packb([{"T": "success", "msg": "connected"}]))
        try:
            auth = msgpack.unpackb(await ws.recv())
            self.auth_attempts += 1
            if auth.get("action") != "auth" or (auth.get("key"), auth.get("secret")) != (self.key, self.secret):
                await ws.send(msgpack.packb([{"T": "error", "code": 402, "msg": "auth failed"}]))
                await ws.close()
                return
            await ws.send(msgpack.packb([{"T": "success", "msg": "authenticated"}]))
            self.subscribed = set()
            self._live = ws
            async for raw in ws:
                action = msgpack.unpackb(raw)
                self.actions.append(action)
                symbols = set(action.get("trades", []))
                if action.get("action") == "subscribe":
                    self.subscribed |= symbols
                elif action.get("action") == "unsubscribe":
                    self.subscribed -= symbols
                await ws.send(self._ack())
        except ConnectionClosed:
            pass
        finally:
            if self._live is ws:
                self._live = None

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path.startswith("/v2/") and "stocks" not in url.path:
            return None  # the WebSocket stream
        if url.path == "/v2/stocks/bars":
            return self._daily_bars(request, parse_qs(url.query))
        if url.path != "/v2/stocks/snapshots":
            return self._json(HTTPStatus.NOT_FOUND, {"code": 40410000, "message": "endpoint not found"})
        self.snapshot_auth.append(request.headers.get("Authorization"))
        if not self._authorized(request):
            return self._json(HTTPStatus.UNAUTHORIZED, {"code": 40110000, "message": "request is not authorized"})
        symbols = parse_qs(url.query).get("symbols", [""])[0].split(",")
        self.snapshot_requests.append(symbols)
        return self._json(HTTPStatus.OK, {s: self._snapshots[s] for s in symbols if s in self._snapshots})

    def _authorized(self, request: Request) -> bool:
        basic = request.headers.get("Authorization")
        keys = (request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY"))
        if basic is not None:
            keys = tuple(base64.b64decode(basic.split(" ", 1)[1]).decode().split(":", 1))
        return keys == (self.key, self.secret)

    def _daily_bars(self, request: Request, query: dict[str, list[str]]) -> Response:
        """Alpaca's multi-symbol bars: bars grouped by symbol, symbols in order, a page cut anywhere."""
        if not self._authorized(request):
            return self._json(HTTPStatus.UNAUTHORIZED, {"code": 40110000, "message": "request is not authorized"})
        args = {k: v[0] for k, v in query.items()}
        self.bars_requests.append(args)
        if self.bars_error_status is not None:
            return self._json(self.bars_error_status, {"code": 50010000, "message": "internal server error"})
        if args.get("timeframe") != "1Day":
            return self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {"code": 42210000, "message": "daily bars only"})
        start, end = (_utc(args[k]) if k in args else None for k in ("start", "end"))
        rows: list[tuple[str, dict[str, object]]] = []
        for symbol in sorted(set(args.get("symbols", "").split(","))):
            for day, close in self._bars.get(symbol, []):
                stamp = dt.datetime.combine(day, dt.time(0), NEW_YORK)  # as `_bar` stamps it
                if (start is None or stamp >= start) and (end is None or stamp <= end):
                    rows.append((symbol, _bar(day, close)))
        offset = int(base64.b64decode(args["page_token"]).decode()) if "page_token" in args else 0
        size = min(self.bars_page_size, int(args.get("limit", self.bars_page_size)))
        page = rows[offset : offset + size]
        grouped: dict[str, list[dict[str, object]]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(bar)
        more = offset + size < len(rows)
        token = base64.b64encode(str(offset + size).encode()).decode() if more else None
        return self._json(HTTPStatus.OK, {"bars": grouped, "next_page_token": token})

    @staticmethod
    def _json(status: HTTPStatus, body: object) -> Response:
        data = json.dumps(body).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                           ("Connection", "close")])
        return Response(status.value, status.phrase, headers, data)
