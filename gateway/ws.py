"""WebSocket `/ws/portfolio/{account_id}?token=<JWT>`: the last snapshot at once, then live updates.

This module is the socket route: authentication, ownership and the client's own messages. The frames
are built in `gateway.frames`, the fan-out from Redis happens in `gateway.hub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.auth import AuthError
from gateway.auth import check_owner, require_user, services_of
from gateway.errors import ApiError, error_response
from gateway.frames import control_frame, error_frame, iso_time
from gateway.hub import PortfolioHub, Watcher
from gateway.openapi import SocketCompanion
from gateway.services import Services

log = logging.getLogger("clera.gateway.ws")

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


class ClientFrame(msgspec.Struct, forbid_unknown_fields=False):
    type: str


_client_decoder = msgspec.json.Decoder(ClientFrame)


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
    watcher = Watcher(websocket, account_id)
    writer = asyncio.create_task(watcher.run(), name=f"ws-writer-{account_id}")
    try:
        await hub.join(watcher)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            watcher.last_heard = time.monotonic()
            _answer(watcher, message.get("text"))
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


def _answer(watcher: Watcher, text: str | None) -> None:
    if text is None:
        watcher.say(error_frame("bad_request", "binary frames are not supported; send JSON text"))
        return
    try:
        frame = _client_decoder.decode(text)
    except msgspec.DecodeError:
        watcher.say(error_frame("bad_request", 'expected a JSON object such as {"type":"heartbeat"}'))
        return
    if frame.type == "heartbeat":
        watcher.say(control_frame({"type": "heartbeat_ack", "timestamp": iso_time(time.time())}))
    elif frame.type != "pong":
        watcher.say(error_frame("bad_request", f"unknown message type {frame.type[:40]!r}"))


async def upgrade_required(_: Request) -> Response:
    """A plain HTTP request on the socket's path gets the error shape instead of a bare 404."""
    response = error_response(426, "upgrade_required", "this path speaks WebSocket: send an Upgrade: websocket request")
    response.headers["Upgrade"] = "websocket"
    return response


def routes(_: Services) -> list[BaseRoute]:
    path = "/ws/portfolio/{account_id}"
    return [WebSocketRoute(path, portfolio_socket), SocketCompanion(path, upgrade_required)]
