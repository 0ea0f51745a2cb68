"""The upstream session of the Alpaca feed: alpaca-py's `StockDataStream` on its own thread and loop.

The SDK's reconnection, with its jittered backoff, and its silence watchdog (`data_timeout`) are kept
as they are; this subclass lets every frame be screened before the SDK reads it, stops on an auth
failure instead of retrying it forever, reports its state to the feed, and can be stopped from
another thread whatever state its loop is in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import msgpack
from alpaca.data.live import StockDataStream

log = logging.getLogger(__name__)

FATAL_AUTH_CODES = {401, 402, 403, 404}  # not authenticated / auth failed / ...: retrying cannot help


class StreamHooks(Protocol):
    """What the stream tells its feed, from the stream's thread."""

    def screen(self, raw: Any) -> Any: ...

    def reject(self, n: int = 1) -> None: ...

    def authenticated(self) -> None: ...

    def auth_failed(self, code: object, msg: object) -> None: ...

    def upstream_error(self, code: object, msg: object) -> None: ...

    def disconnected(self) -> None: ...


class AlpacaStream(StockDataStream):
    """`StockDataStream` with the hooks the feed needs (the SDK's reconnect loop is kept as is)."""

    def __init__(self, owner: StreamHooks, **kwargs: Any) -> None:
        super().__init__(raw_data=True, **kwargs)
        self._owner = owner
        self._shutdown = False

    async def _connect(self) -> None:
        if self._shutdown:  # closed before the SDK's loop started: make its retry loop end
            await self.stop_ws()
            raise ValueError("stream closed")
        await super()._connect()
        ws: Any = self._ws  # the SDK's connection, typed Optional; it is open once _connect returned
        receive = ws.recv

        async def screened_recv() -> Any:
            return self._owner.screen(await receive())

        ws.recv = screened_recv

    async def _auth(self) -> None:
        """The SDK's auth exchange, but an auth error stops the stream instead of being retried forever."""
        ws: Any = self._ws  # open: _auth runs right after _connect
        await ws.send(msgpack.packb({"action": "auth", "key": self._api_key, "secret": self._secret_key}))
        reply = msgpack.unpackb(await ws.recv())
        first = reply[0] if isinstance(reply, list) and reply and isinstance(reply[0], dict) else {}
        if first.get("T") == "error":
            code, msg = first.get("code"), first.get("msg", "auth failed")
            if code in FATAL_AUTH_CODES:
                self._owner.auth_failed(code, msg)
                log.error("Alpaca market data stream stopped: retrying rejected credentials cannot succeed")
                await self.stop_ws()
            raise ValueError(f"{msg} ({code})")
        if first.get("T") != "success" or first.get("msg") != "authenticated":
            raise ValueError("failed to authenticate")
        self._owner.authenticated()

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind, symbol = msg.get("T"), msg.get("S")
        if kind == "t" and not (isinstance(symbol, str) and symbol in self._handlers["trades"]):
            self._owner.reject()  # a trade for a symbol nobody subscribed
            return
        if kind == "error":
            self._owner.upstream_error(msg.get("code"), msg.get("msg"))
        await super()._dispatch(msg)

    async def close(self) -> None:
        self._owner.disconnected()
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
