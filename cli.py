"""The `clera` command: run everything locally, mint a development token, watch a portfolio live.

    clera serve                      Ray + Redis + engine + Serve gateway, demo accounts, live table
    clera token --user ID            a development JWT signed with the configured secret
    clera watch ACCOUNT [--url --token]   one portfolio over the WebSocket, reconnecting on its own
    clera chat ACCOUNT [--url --token]    talk to the assistant; confirm, edit or cancel its orders
    clera config --markdown          the configuration table of the README
    clera closure monitor ...        account closures' logs and progress (--account/--user/--all)
    clera profiles collect ...       company profiles from FMP into the store (rate-limited, resumable)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.auth import generate_secret, mint_jwt
from engine.config import ConfigError, Settings, load_settings, markdown_table

console = Console()
SECRETS_FILE = "dev-secrets.json"
POLICY_VIOLATION = 1008


# --- development secrets -------------------------------------------------------------------
def ensure_dev_secrets(settings: Settings) -> dict[str, str]:
    """BACKEND_API_KEY / SUPABASE_JWT_SECRET when unset: generated once and kept in CLERA_DATA_DIR, so a
    restart keeps earlier tokens valid. Returns the values to put into every process's environment."""
    wanted = {"BACKEND_API_KEY": settings.backend_api_key, "SUPABASE_JWT_SECRET": settings.jwt_secret}
    if all(wanted.values()):
        return {k: v for k, v in wanted.items() if v}
    path = settings.data_path / SECRETS_FILE
    stored: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    changed = False
    for name in wanted:
        if not stored.get(name):
            stored[name] = generate_secret()
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(stored, indent=1))
    return {name: value or stored[name] for name, value in wanted.items()}


# --- clera token ---------------------------------------------------------------------------
def cmd_token(args: argparse.Namespace) -> int:
    settings = load_settings()
    secret = ensure_dev_secrets(settings)["SUPABASE_JWT_SECRET"]
    print(mint_jwt(args.user, secret, ttl_s=args.ttl))
    return 0


# --- clera config --------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    from serve_app import settings_environ

    for name, value in sorted(settings_environ(load_settings()).items()):
        secret = name.endswith(("_KEY", "_SECRET")) or name == "DATABASE_URL"
        print(f"{name}={'***' if secret else value}")
    return 0


# --- clera watch ---------------------------------------------------------------------------
class Backoff:
    """Exponential backoff with full jitter: spreads reconnecting clients so a restart is not a stampede."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class AuthRefused(Exception):
    """The server refused for good (a 1008 close or a 4xx on the handshake): retrying cannot help."""


async def watch_frames(
    url: str,
    on_frame: Callable[[dict[str, Any]], None],
    on_status: Callable[[str], None] = lambda _: None,
    *,
    backoff: Backoff | None = None,
    stop: asyncio.Event | None = None,
    heartbeat_s: float = 15.0,
) -> None:
    """Receive frames until `stop` is set, reconnecting after any drop; raises AuthRefused on a refusal."""
    stop = stop or asyncio.Event()
    runner = asyncio.create_task(_watch_forever(url, on_frame, on_status, backoff or Backoff(), heartbeat_s))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (runner, stopper):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    if runner in done:
        runner.result()


async def _watch_forever(
    url: str,
    on_frame: Callable[[dict[str, Any]], None],
    on_status: Callable[[str], None],
    backoff: Backoff,
    heartbeat_s: float,
) -> None:
    import websockets
    from websockets.asyncio.client import connect

    while True:
        try:
            async with connect(url, open_timeout=10) as ws:
                on_status("connected")
                beat = asyncio.create_task(_heartbeats(ws, heartbeat_s))
                try:
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame.get("type") == "ping":
                            await ws.send(json.dumps({"type": "pong"}))
                        backoff.reset()  # a frame arrived: this connection really works
                        on_frame(frame)
                finally:
                    beat.cancel()
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == POLICY_VIOLATION:
                raise AuthRefused(exc.rcvd.reason or "not allowed") from None
            on_status(f"disconnected ({exc.rcvd.code if exc.rcvd else 'no close frame'})")
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500:  # a wrong URL or a refused upgrade does not heal by retrying
                raise AuthRefused(f"HTTP {status} on the WebSocket handshake") from None
            on_status(f"cannot connect (HTTP {status})")
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
            on_status(f"cannot connect ({type(exc).__name__})")
        delay = backoff.next_delay()
        on_status(f"reconnecting in {delay:.1f}s")
        await asyncio.sleep(delay)


async def _heartbeats(ws: Any, every_s: float) -> None:
    with contextlib.suppress(Exception):
        while True:
            await asyncio.sleep(every_s)
            await ws.send(json.dumps({"type": "heartbeat"}))


def default_watch_url(settings: Settings) -> str:
    """The replica's own port when direct ingress is on: through Serve's proxy a slow terminal's
    frames would pile up inside Serve, while the replica itself keeps only the latest snapshot."""
    port = settings.direct_port if settings.serve_direct_ingress else settings.port
    return f"ws://{settings.host}:{port}"


def _portfolio_view(account: str, frame: dict[str, Any] | None, status: str) -> Group:
    header = Text.assemble(("clera watch ", "bold"), (account, "cyan"), "  ", (status, "dim"))
    if frame is None:
        return Group(header, Text("waiting for the first snapshot ..."))
    snap = frame.get("snapshot", {})
    change_style = "green" if frame.get("raw_return", 0) >= 0 else "red"
    summary = Text.assemble(
        ("value ", "dim"), (frame["total_value"], "bold"), ("   today ", "dim"), (frame["today_return"], change_style),
        ("   seq ", "dim"), str(frame.get("seq")), ("   source ", "dim"), str(frame.get("source") or "?"),
        ("   latency ", "dim"), f"{max(0.0, time.time() - snap.get('as_of', time.time())) * 1000:.0f} ms",
    )
    table = Table(box=None, header_style="bold")
    for column in ("symbol", "qty", "last", "prev close", "value", "day $", "day %"):
        table.add_column(column, justify="left" if column == "symbol" else "right")
    for p in snap.get("positions", []):
        style = "green" if p["day_change"] >= 0 else "red"
        table.add_row(
            p["symbol"], f"{p['qty']:,.4g}", f"{p['last_price']:,.2f}", f"{p['prev_close']:,.2f}",
            f"{p['market_value']:,.2f}", Text(f"{p['day_change']:+,.2f}", style),
            Text(f"{p['day_change_pct']:+.2f}%", style),
        )
    cash = Text.assemble(
        ("cash ", "dim"), f"{snap.get('cash', 0):,.2f}", ("   session ", "dim"), str(snap.get("session", ""))
    )
    return Group(header, summary, cash, table)


def user_token(args: argparse.Namespace, settings: Settings) -> str | None:
    """--token, else CLERA_TOKEN, else a development token minted for --user; None if none of them."""
    token = args.token or os.environ.get("CLERA_TOKEN")
    if token or not args.user:
        return token
    return mint_jwt(args.user, ensure_dev_secrets(settings)["SUPABASE_JWT_SECRET"])


def cmd_watch(args: argparse.Namespace) -> int:
    settings = load_settings()
    token = user_token(args, settings)
    if not token:
        console.print("[red]clera watch needs --token (or --user to mint a development token)[/red]")
        return 2
    base = (args.url or default_watch_url(settings)).rstrip("/")
    base = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    url = f"{base}/ws/portfolio/{args.account}?token={token}"
    state: dict[str, Any] = {"frame": None, "status": "connecting"}

    async def run() -> None:
        with Live(_portfolio_view(args.account, None, "connecting"), console=console, refresh_per_second=8) as live:
            def redraw() -> None:
                live.update(_portfolio_view(args.account, state["frame"], state["status"]))

            def on_frame(frame: dict[str, Any]) -> None:
                if frame.get("type") == "portfolio_update":
                    state["frame"] = frame
                    redraw()

            def on_status(status: str) -> None:
                state["status"] = status
                redraw()

            await watch_frames(url, on_frame, on_status)

    try:
        asyncio.run(run())
    except AuthRefused as exc:
        console.print(f"[red]refused by the server: {exc}[/red]")
        return 2
    except KeyboardInterrupt:
        pass
    return 0


# --- clera chat ----------------------------------------------------------------------------
def _show_turn(turn: dict[str, Any]) -> None:
    for step in turn["steps"]:
        args = ", ".join(f"{k}={v!r}" for k, v in step["args"].items())
        console.print(f"[dim]{step['agent']} -> {step['tool']}({args})[/dim]")
    console.print(f"[bold cyan]clera[/bold cyan] [dim]({turn['agent']})[/dim]: {turn['reply']}")


def _decide(interrupt: dict[str, Any]) -> dict[str, Any]:
    """The person's answer to a trade confirmation, asked at the terminal."""
    from rich.prompt import Prompt

    order = interrupt["order"]
    console.print(f"[bold yellow]confirmation needed[/bold yellow] (expires {interrupt['expires_at']}): "
                  f"{order['side']} {order.get('notional') and '$' + order['notional'] or order.get('qty') + ' shares'} "
                  f"of {order['symbol']}, about {order['estimated_qty']} shares at ${order['estimated_price']}, "
                  f"market {'open' if order['market_open'] else 'closed (queued for the next open)'}")
    decision = Prompt.ask("confirm, edit or cancel", choices=["confirm", "edit", "cancel"], default="cancel")
    answer: dict[str, Any] = {"interruptId": interrupt["id"], "decision": decision}
    if decision == "edit":
        edit = {"symbol": Prompt.ask("symbol", default=order["symbol"])}
        amount = Prompt.ask("dollars (or blank for shares)", default="")
        edit.update({"notional": amount} if amount else {"qty": Prompt.ask("shares")})
        answer["edit"] = edit
    return answer


def cmd_chat(args: argparse.Namespace) -> int:
    import httpx
    from rich.prompt import Prompt

    settings = load_settings()
    token = user_token(args, settings)
    if not token:
        console.print("[red]clera chat needs --token (or --user to mint a development token)[/red]")
        return 2
    api_key = args.api_key or settings.backend_api_key or ensure_dev_secrets(settings)["BACKEND_API_KEY"]
    base = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    thread: str | None = args.thread
    with httpx.Client(base_url=base, headers={"X-API-Key": api_key, "Authorization": f"Bearer {token}"},
                      timeout=180) as client:
        def post(path: str, body: dict[str, Any]) -> dict[str, Any] | None:
            response = client.post(path, json=body)
            if response.status_code != 200:
                error = response.json().get("error", {}) if response.headers.get("content-type", "").startswith(
                    "application/json") else {"message": response.text}
                console.print(f"[red]{response.status_code} {error.get('code', '')}: {error.get('message')}[/red]")
                return None
            return response.json()

        console.print(f"chatting about account {args.account} (Ctrl-D to leave)")
        while True:
            try:
                text = Prompt.ask("[bold]you[/bold]")
            except (EOFError, KeyboardInterrupt):
                return 0
            turn = post("/api/chat", {"message": text, "accountId": args.account, "threadId": thread})
            while turn is not None:
                thread = turn["threadId"]
                _show_turn(turn)
                if turn["interrupt"] is None:
                    break
                turn = post("/api/chat/resume", {"threadId": thread, **_decide(turn["interrupt"])})


# --- clera serve ---------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    import serve_app
    from actors import topology
    from brokerage.company_profiles import load_default_company_profiles
    from brokerage.factory import process_broker
    from brokerage.store import store_from_settings
    from engine.console import run_console
    from engine.redis_server import redis_from_settings
    from gateway import demo

    settings = load_settings()
    if args.host:
        os.environ["CLERA_HOST"] = args.host
    if args.port:
        os.environ["CLERA_PORT"] = str(args.port)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    os.environ.update(ensure_dev_secrets(settings))
    redis_url, embedded = redis_from_settings(settings)
    os.environ["REDIS_URL"] = redis_url
    if settings.ray_address and embedded is not None:
        console.print("[yellow]joining a Ray cluster with an embedded Redis: only this machine can reach it; "
                      "set REDIS_URL for a real cluster[/yellow]")
    if settings.feed == "replay" and settings.replay_epoch is None:
        os.environ["CLERA_REPLAY_EPOCH"] = repr(time.time())  # once, for every process started below
    settings = load_settings()
    env = serve_app.settings_environ(settings)
    if not settings.ray_address:
        # Ray starts here, so its processes inherit these; a cluster sets them on `ray start` (cluster.yaml).
        # Local replicas drain for 2 s on shutdown instead of the 30 s a load balancer needs.
        os.environ.update(serve_app.direct_ingress_environ(settings))
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")

    stop = threading.Event()
    try:
        with console.status("starting Ray, the engine and the gateway ..."):
            ray.init(
                address=settings.ray_address or "local", namespace=settings.ray_namespace,
                runtime_env={"env_vars": env}, include_dashboard=False, logging_level="warning",
            )
            store = store_from_settings(settings)
            load_default_company_profiles(store)
            broker = process_broker(settings, redis_url) if settings.broker == "paper" else None
            holdings = demo.demo_holdings(settings.demo_accounts_file)
            demo.create_demo_accounts(store, broker, holdings)
            targets = demo.demo_targets(store, holdings)
            topology.start_topology(settings, redis_url)
            serve.start(http_options={"host": settings.host, "port": settings.port})
            serve.run(serve_app.gateway_app(settings, env), name="clera", route_prefix="/")
        if broker is not None:
            demo.fund_in_background(broker, targets, _price_reader(redis_url), stop)
        url = f"http://{settings.host}:{settings.port}"
        direct = settings.serve_direct_ingress and not settings.ray_address  # Ray started here, with direct ingress
        watch_url = default_watch_url(settings) if direct else url.replace("http://", "ws://", 1)
        demo_token = mint_jwt(demo.DEMO_USER, settings.jwt_secret or "")
        say = functools.partial(console.print, soft_wrap=True)  # keys and tokens must stay copy-pastable
        say(f"[bold green]Clera engine is up[/bold green] at {url}  (OpenAPI: {url}/openapi.json)")
        if direct:
            say(f"sockets straight to the gateway replica (no proxy hop): {watch_url}")
        say(f"API key (X-API-Key):  {settings.backend_api_key}")
        say(f"demo user {demo.DEMO_USER}, token (Authorization: Bearer ... or ?token=...):")
        say(demo_token)
        say(f"watch one:  export CLERA_TOKEN={demo_token}; clera watch ACCOUNT --url {watch_url}")
        say(f"chat:       clera chat ACCOUNT --url {url}   (with CLERA_TOKEN exported as above)")
        for account_id, target in targets:
            say(f"  {target.account_id:<16} {account_id}")
        if broker is not None:
            say("[dim]paper demo accounts fund by ACH, then buy their stocks at the replayed open[/dim]")
        rows = [(account_id, target.account_id) for account_id, target in targets]
        if console.is_terminal:
            run_console(redis_url, rows, settings.interest_ttl_s, stop, console)
        else:
            # a live table is drawn only on a terminal: into a file or a pipe rich writes it once, at
            # exit, cut to 80 columns; a log is better served by saying how to stop
            say("output is not a terminal: no live table; Ctrl-C (SIGINT) stops")
            stop.wait()
    except KeyboardInterrupt:
        console.print("stopping ...")
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        return 2
    finally:
        stop.set()
        if ray.is_initialized():
            if not settings.ray_address:
                with contextlib.suppress(Exception):
                    serve.shutdown()
            ray.shutdown()
        if embedded is not None:
            embedded.close()
    return 0


def _price_reader(redis_url: str) -> Callable[[str], float | None]:
    from brokerage.prices import RedisPriceReader

    reader = RedisPriceReader(redis_url)

    def price_of(symbol: str) -> float | None:
        last = reader.last(symbol)
        return None if last is None else last.last

    return price_of


# --- clera closure monitor ------------------------------------------------------------------
def cmd_closure_monitor(args: argparse.Namespace) -> int:
    from brokerage.closure import monitor

    return monitor.run(args, load_settings())


# --- clera profiles collect -----------------------------------------------------------------
def cmd_profiles_collect(args: argparse.Namespace) -> int:
    from brokerage.profile_command import run

    return run(args, load_settings(), console)


# --- entry point ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clera", description="Clera engine: realtime portfolios and brokerage on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run everything locally (Ray, Redis, engine, gateway)")
    serve_p.add_argument("--host", help="bind address (CLERA_HOST)")
    serve_p.add_argument("--port", type=int, help="port (CLERA_PORT)")
    serve_p.set_defaults(func=cmd_serve)
    token_p = sub.add_parser("token", help="mint a development JWT")
    token_p.add_argument("--user", required=True, help="user id (the token's sub)")
    token_p.add_argument("--ttl", type=float, default=7 * 24 * 3600, help="lifetime in seconds")
    token_p.set_defaults(func=cmd_token)
    watch_p = sub.add_parser("watch", help="watch one portfolio live over the WebSocket")
    watch_p.add_argument("account")
    watch_p.add_argument(
        "--url", help="gateway base URL (default: CLERA_HOST:CLERA_DIRECT_PORT, the replica's own port; "
        "CLERA_PORT, Serve's proxy, with CLERA_SERVE_DIRECT_INGRESS=false)",
    )
    watch_p.add_argument("--token", help="user JWT (default: CLERA_TOKEN, or --user with the dev secret)")
    watch_p.add_argument("--user", help="mint a development token for this user id")
    watch_p.set_defaults(func=cmd_watch)
    chat_p = sub.add_parser("chat", help="chat with the assistant about one account")
    chat_p.add_argument("account")
    chat_p.add_argument("--url", help="gateway base URL (default: http://CLERA_HOST:CLERA_PORT)")
    chat_p.add_argument("--token", help="user JWT (default: CLERA_TOKEN, or --user with the dev secret)")
    chat_p.add_argument("--user", help="mint a development token for this user id")
    chat_p.add_argument("--api-key", help="X-API-Key (default: BACKEND_API_KEY or the development key)")
    chat_p.add_argument("--thread", help="continue this conversation")
    chat_p.set_defaults(func=cmd_chat)
    config_p = sub.add_parser("config", help="print the configuration")
    config_p.add_argument("--markdown", action="store_true", help="the README's configuration table")
    config_p.set_defaults(func=cmd_config)
    closure_p = sub.add_parser("closure", help="account closures")
    closure_sub = closure_p.add_subparsers(dest="closure_command", required=True)
    monitor_p = closure_sub.add_parser(
        "monitor", help="closure logs and progress, colour-coded",
        description="--account ID [--follow], --user ID (or USER_ID) [--recent] [--lines N] [--summary], or --all",
    )
    from brokerage.closure.monitor import add_arguments as add_monitor_arguments

    add_monitor_arguments(monitor_p)
    monitor_p.set_defaults(func=cmd_closure_monitor)
    profiles_p = sub.add_parser("profiles", help="company profiles")
    profiles_sub = profiles_p.add_subparsers(dest="profiles_command", required=True)
    collect_p = profiles_sub.add_parser("collect", help="fill the store's company profiles from FMP")
    from brokerage.profile_command import add_arguments as add_collect_arguments

    add_collect_arguments(collect_p)
    collect_p.set_defaults(func=cmd_profiles_collect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
