"""`clera watch ACCOUNT`: one portfolio live over the WebSocket, reconnecting on its own.

websockets' reconnecting `connect` iterator does the reconnecting, with its jittered exponential
backoff; this module decides what is final (a refusal) and keeps the server's keep-alive protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import websockets
from rich.live import Live
from websockets.asyncio.client import ClientConnection, connect

from clera_cli import console
from clera_cli.dev_secrets import user_token
from clera_cli.watch_view import portfolio_view
from engine.config import Settings, load_settings

POLICY_VIOLATION = 1008


class AuthRefused(Exception):
    """The server refused for good (a 1008 close or a 4xx on the handshake): retrying cannot help."""


async def watch_frames(
    url: str,
    on_frame: Callable[[dict[str, Any]], None],
    on_status: Callable[[str], None] = lambda _: None,
    *,
    stop: asyncio.Event | None = None,
    heartbeat_s: float = 15.0,
) -> None:
    """Receive frames until `stop` is set, reconnecting after any drop; raises AuthRefused on a refusal."""
    stop = stop or asyncio.Event()
    runner = asyncio.create_task(_watch_forever(url, on_frame, on_status, heartbeat_s))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (runner, stopper):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    if runner in done:
        runner.result()


def _triage(on_status: Callable[[str], None]) -> Callable[[Exception], Exception | None]:
    """What websockets' reconnecting `connect` does with a failed connection attempt: a refused upgrade
    (4xx: a wrong URL or token) is final; anything else on the way to the server may heal, and the
    library retries it with its jittered exponential backoff (so a restart is not a stampede)."""

    def triage(exc: Exception) -> Exception | None:
        if isinstance(exc, websockets.InvalidStatus):
            status = exc.response.status_code
            if 400 <= status < 500:
                return AuthRefused(f"HTTP {status} on the WebSocket handshake")
            on_status(f"cannot connect (HTTP {status}); reconnecting")
            return None
        if isinstance(exc, (OSError, asyncio.TimeoutError, websockets.InvalidHandshake)):
            on_status(f"cannot connect ({type(exc).__name__}); reconnecting")
            return None
        return exc

    return triage


async def _watch_forever(
    url: str, on_frame: Callable[[dict[str, Any]], None], on_status: Callable[[str], None], heartbeat_s: float
) -> None:
    # websockets' `connect` iterates with an async generator (typed as a plain AsyncIterator): closable
    attempts = connect(url, open_timeout=10, process_exception=_triage(on_status))
    connections = cast(AsyncGenerator[ClientConnection, None], aiter(attempts))
    async with contextlib.aclosing(connections):  # leaving (stop, refusal) closes the open connection
        async for ws in connections:
            on_status("connected")
            beat = asyncio.create_task(_heartbeats(ws, heartbeat_s))
            try:
                while True:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
                    on_frame(frame)
            except websockets.ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == POLICY_VIOLATION:
                    raise AuthRefused(exc.rcvd.reason or "not allowed") from None
                on_status(f"disconnected ({exc.rcvd.code if exc.rcvd else 'no close frame'}); reconnecting")
            finally:
                beat.cancel()


async def _heartbeats(ws: Any, every_s: float) -> None:
    with contextlib.suppress(Exception):
        while True:
            await asyncio.sleep(every_s)
            await ws.send(json.dumps({"type": "heartbeat"}))


def default_watch_url(settings: Settings) -> str:
    """The replica's own port when direct ingress is on: through Serve's proxy a slow terminal's
    frames would pile up inside Serve, while the replica itself keeps only the latest snapshot."""
    return f"ws://{settings.host}:{settings.socket_port}"


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    token = user_token(args, settings)
    if not token:
        console.print("[red]clera watch needs --token (or --user to mint a development token)[/red]")
        return 2
    base = (args.url or default_watch_url(settings)).rstrip("/")
    base = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    url = f"{base}/ws/portfolio/{args.account}?token={token}"
    state: dict[str, Any] = {"frame": None, "status": "connecting", "received_at": 0.0}

    async def show() -> None:
        with Live(portfolio_view(args.account, None, "connecting"), console=console, refresh_per_second=8) as live:
            def redraw() -> None:
                live.update(portfolio_view(args.account, state["frame"], state["status"], state["received_at"]))

            def on_frame(frame: dict[str, Any]) -> None:
                if frame.get("type") == "portfolio_update":
                    state["frame"], state["received_at"] = frame, time.time()
                    redraw()

            def on_status(status: str) -> None:
                state["status"] = status
                redraw()

            await watch_frames(url, on_frame, on_status)

    try:
        asyncio.run(show())
    except AuthRefused as exc:
        console.print(f"[red]refused by the server: {exc}[/red]")
        return 2
    except KeyboardInterrupt:
        pass
    return 0
