"""WebSocket `/ws/portfolio/{account_id}?token=<JWT>`: the last snapshot at once, then live updates.

This module is the socket route: authentication, ownership and the client's own messages. The frames
are built in `gateway.frames`, the fan-out from Redis happens in `gateway.hub`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.auth import AuthError
from gateway.auth import check_owner, require_user, services_of
from gateway.errors import ApiError, error_response
from gateway.hub import CONTROL_BACKLOG, PortfolioHub, Watcher, answer
from gateway.openapi import SocketCompanion
from gateway.services import Services

log = logging.getLogger("clera.gateway.ws")

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


class AsgiWatcher(Watcher):
    """An ASGI socket: a latest-wins snapshot slot, a short control queue, and a single writer task
    (ASGI sends must be awaited and must not interleave)."""

    def __init__(self, websocket: WebSocket, account_id: str) -> None:
        super().__init__(account_id)
        self.websocket = websocket
        self._latest: bytes | None = None
        self._latest_seq = -1
        self._sent_seq = -1
        self._control: collections.deque[bytes] = collections.deque(maxlen=CONTROL_BACKLOG)
        self._close: tuple[int, str] | None = None
        self._wake = asyncio.Event()

    def offer(self, seq: int, frame: bytes) -> None:
        """Replace whatever is waiting; snapshots older than what was offered/sent are dropped."""
        if seq <= self._latest_seq or seq <= self._sent_seq:
            return
        self._latest, self._latest_seq = frame, seq
        self._wake.set()

    def say(self, frame: bytes) -> None:
        self._control.append(frame)
        self._wake.set()

    def request_close(self, code: int, reason: str) -> None:
        self._close = (code, reason)
        self._wake.set()

    async def run(self) -> None:
        """The socket's only writer; ends when the peer is gone."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._control:
                    await self.websocket.send_text(self._control.popleft().decode())
                if self._latest is not None:
                    frame, seq = self._latest, self._latest_seq
                    self._latest = None
                    self._sent_seq = seq
                    await self.websocket.send_text(frame.decode())
                if self._close is not None:
                    await self.websocket.close(code=self._close[0], reason=self._close[1])
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the peer went away mid-send; the receive loop sees the disconnect and cleans up


async def portfolio_socket(websocket: WebSocket) -> None:
    """Accept first, then authenticate, so a refusal is a WebSocket close code (1008) the client can read."""
    account_id = websocket.path_params["account_id"]
    await websocket.accept()
    services = services_of(websocket)
    try:
        user_id = require_user(websocket)
        await check_owner(services, user_id, account_id)
    except (AuthError, ApiError) as exc:
        await websocket.close(code=POLICY_VIOLATION, reason=exc.message[:120])
        return
    except Exception:
        log.exception("auth check failed on /ws/portfolio")
        await websocket.close(code=INTERNAL_ERROR, reason="internal error")
        return

    hub: PortfolioHub = websocket.app.state.hub
    watcher = AsgiWatcher(websocket, account_id)
    writer = asyncio.create_task(watcher.run(), name=f"ws-writer-{account_id}")
    try:
        await hub.join(watcher)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            watcher.last_heard = time.monotonic()
            answer(watcher, message.get("text"))
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("portfolio socket failed for %s", account_id, extra={"account_id": account_id})
        watcher.request_close(INTERNAL_ERROR, "internal error")
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(writer), timeout=1.0)
    finally:
        await hub.leave(watcher)
        writer.cancel()


async def upgrade_required(_: Request) -> Response:
    """A plain HTTP request on the socket's path gets the error shape instead of a bare 404."""
    response = error_response(426, "upgrade_required", "this path speaks WebSocket: send an Upgrade: websocket request")
    response.headers["Upgrade"] = "websocket"
    return response


def routes(_: Services) -> list[BaseRoute]:
    path = "/ws/portfolio/{account_id}"
    return [WebSocketRoute(path, portfolio_socket), SocketCompanion(path, upgrade_required)]
