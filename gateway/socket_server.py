"""The replica's own WebSocket server for `/ws/portfolio/{account_id}?token=<JWT>`, on its own port.

Through ASGI (Serve's direct ingress or its proxy, Starlette, uvicorn) a delivered frame costs tens
of microseconds of replica CPU: a chain of send wrappers and one task wake-up per socket per frame.
Here `websockets` serves the same path beside the ASGI app, sharing its `PortfolioHub` (one Redis
subscription per replica for both), and a snapshot frame, built once, is written straight to each
socket's transport from the hub's dispatch, as `websockets.broadcast` does: no task and no await per
socket per frame.

Each frame is put on the wire once per snapshot (a server's frames are unmasked, so every socket gets
the same bytes) and written with one `transport.write` per socket. The connection's protocol object
is bypassed for these writes, which is sound because the server never fragments a message and
negotiates no extension (compression off); its state is checked first, so nothing follows a close.

Latest-wins without a writer task: a frame is written at once while the socket's write buffer is at
or below `WRITE_MARK`; above it, the newest snapshot waits in a one-frame slot (each newer one
replaces it) and one short-lived task writes it when the transport has drained to its low-water
mark. So a slow socket holds at most the mark plus one frame, never a backlog, and never holds up
the hub or the other sockets. Behaviour otherwise matches the ASGI route (`gateway.ws`): accept, then
authenticate (1008 with a reason on failure, 1011 on an internal error), the same client messages
and answers, and the hub's pings and timeouts.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import logging
import time
import urllib.parse

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import OP_TEXT, Frame
from websockets.http11 import Request, Response
from websockets.protocol import State

from engine.auth import AuthError
from engine.wire import json_encoder
from gateway.auth import check_owner, socket_user
from gateway.errors import ApiError, ErrorBody, ErrorResponse
from gateway.hub import CONTROL_BACKLOG, PortfolioHub, Watcher, answer
from gateway.services import Services

log = logging.getLogger("clera.gateway.ws")

PATH_PREFIX = "/ws/portfolio/"
PORTS_PER_NODE = 101  # like the direct-ingress ports: CLERA_WS_PORT..CLERA_WS_PORT+100
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
# The transport's high-water mark, websockets' own default: 32 KiB holds ten-odd frames of a typical
# account (1-3 KB), enough to ride out a burst; a socket this far behind (its kernel buffer full as
# well) is not reading, and gets only the newest snapshot once it drains. Bounds a slow socket's memory.
WRITE_MARK = 32 * 1024
MAX_CLIENT_MESSAGE = 64 * 1024  # clients send heartbeats and pongs, nothing large


def text_frame(payload: bytes) -> bytes:
    """A whole unmasked text frame (RFC 6455) carrying `payload`, UTF-8 text."""
    return Frame(OP_TEXT, payload).serialize(mask=False)


# The hub offers one snapshot frame to every socket of its account in a row: the frame is put on the
# wire once and each further socket finds it here (bytes cache their hash; a hit compares identity).
shared_text_frame = functools.lru_cache(maxsize=8)(text_frame)


def account_of_path(path: str) -> str | None:
    """The account id of `/ws/portfolio/{account_id}` (percent-decoded as Starlette's path parameter
    is), or None for any other path."""
    if not path.startswith(PATH_PREFIX):
        return None
    account = urllib.parse.unquote(path[len(PATH_PREFIX) :])
    return account if account and "/" not in account else None


def _json_response(connection: ServerConnection, status: int, code: str, message: str) -> Response:
    """An HTTP answer in the API's one error shape (gateway.errors)."""
    body = json_encoder.encode(ErrorResponse(ErrorBody(code=code, message=message))).decode()
    response = connection.respond(status, body)
    del response.headers["Content-Type"]  # websockets' Headers keep every value set: replace, not add
    response.headers["Content-Type"] = "application/json"
    return response


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    """What the ASGI app answers without a handshake: 404 off the socket's path, 426 to plain HTTP."""
    path = urllib.parse.urlsplit(request.path).path
    if account_of_path(path) is None:
        return _json_response(connection, 404, "not_found", "Not Found")
    if "websocket" not in request.headers.get("Upgrade", "").lower():
        response = _json_response(
            connection, 426, "upgrade_required", "this path speaks WebSocket: send an Upgrade: websocket request"
        )
        response.headers["Upgrade"] = "websocket"
        return response
    return None


class NativeWatcher(Watcher):
    """A socket of the replica's own server: frames written straight to its transport (see the module)."""

    def __init__(self, connection: ServerConnection, account_id: str) -> None:
        super().__init__(account_id)
        self._connection = connection
        self._protocol = connection.protocol
        self._transport = connection.transport
        self._offered_seq = -1
        self._waiting: bytes | None = None  # the newest snapshot not yet written: latest-wins
        self._control: collections.deque[bytes] = collections.deque(maxlen=CONTROL_BACKLOG)
        self._drainer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    def offer(self, seq: int, frame: bytes) -> None:
        if seq <= self._offered_seq:
            return
        self._offered_seq = seq
        if self._drainer is None and self._transport.get_write_buffer_size() <= WRITE_MARK:
            self._write(shared_text_frame(frame))
        else:
            self._waiting = frame
            self._drain_later()

    def say(self, frame: bytes) -> None:
        if self._drainer is None and self._transport.get_write_buffer_size() <= WRITE_MARK:
            self._write(text_frame(frame))
        else:
            self._control.append(frame)
            self._drain_later()

    def request_close(self, code: int, reason: str) -> None:
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self._connection.close(code, reason))

    def _write(self, wire: bytes) -> None:
        """A whole frame onto the transport (skipped once the connection is closing)."""
        if self._protocol.state is not State.OPEN:
            return
        try:
            self._transport.write(wire)
        except (OSError, RuntimeError) as exc:  # never into the hub's dispatch: the other sockets come first
            log.debug("write to a closing socket failed: %s", exc)  # its own reader sees it and ends the handler

    def _drain_later(self) -> None:
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Waits for the transport to drain below its low-water mark, then writes what waited:
        control frames first, then the newest snapshot. Ends when nothing waits."""
        try:
            while self._waiting is not None or self._control:
                await self._connection.drain()  # returns at once unless the buffer is above the mark
                if self._protocol.state is not State.OPEN:
                    return
                while self._control:
                    self._write(text_frame(self._control.popleft()))
                frame, self._waiting = self._waiting, None
                if frame is not None:
                    self._write(text_frame(frame))
        except (OSError, ConnectionClosed):
            return  # lost while waiting: the handler cleans up
        finally:
            self._drainer = None

    def discard(self) -> None:
        """The socket is gone: nothing more is written to it."""
        self._waiting = None
        self._control.clear()
        if self._drainer is not None:
            self._drainer.cancel()


class SocketServer:
    """`/ws/portfolio` served by websockets on the first free port of a range, beside the ASGI app."""

    def __init__(self, hub: PortfolioHub, services: Services) -> None:
        self._hub = hub
        self._services = services
        self._server: Server | None = None
        self.port: int | None = None

    async def start(self, host: str, first_port: int, ports: int = PORTS_PER_NODE) -> int:
        """Binds the first free port of `first_port..first_port+ports-1` (one per replica on a node)
        and returns it."""
        for port in range(first_port, first_port + ports):
            try:
                self._server = await serve(
                    self._handle, host, port, process_request=process_request, compression=None,
                    ping_interval=None, max_size=MAX_CLIENT_MESSAGE, write_limit=WRITE_MARK,
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self.port = port
            log.info("native WebSocket server on %s:%d", host, port)
            return port
        last = first_port + ports - 1
        raise OSError(errno.EADDRINUSE, f"no free port in {first_port}..{last} for the WebSocket server")

    async def close(self) -> None:
        """Stops accepting and closes the open sockets with 1001 (going away)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, connection: ServerConnection) -> None:
        """Accept first (websockets did), then authenticate, so a refusal is a close code the client reads."""
        assert connection.request is not None  # the handshake is done when the handler runs
        target = urllib.parse.urlsplit(connection.request.path)
        account_id = account_of_path(target.path)
        assert account_id is not None  # process_request refused every other path
        query = dict(urllib.parse.parse_qsl(target.query))
        try:
            user_id = socket_user(connection.request.headers.get("Authorization"), query.get("token"), self._services)
            await check_owner(self._services, user_id, account_id)
        except (AuthError, ApiError) as exc:
            await connection.close(POLICY_VIOLATION, exc.message[:120])
            return
        except Exception:
            log.exception("auth check failed on /ws/portfolio")
            await connection.close(INTERNAL_ERROR, "internal error")
            return

        watcher = NativeWatcher(connection, account_id)
        try:
            await self._hub.join(watcher)
            async for message in connection:
                watcher.last_heard = time.monotonic()
                answer(watcher, message if isinstance(message, str) else None)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("portfolio socket failed for %s", account_id, extra={"account_id": account_id})
            await connection.close(INTERNAL_ERROR, "internal error")
        finally:
            await self._hub.leave(watcher)
            watcher.discard()
