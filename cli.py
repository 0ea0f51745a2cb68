"""The `clera` command: run everything locally, mint a development token, watch a portfolio live.

    clera serve                      Ray + Redis + engine + Serve gateway, demo accounts, live table
    clera token --user ID            a development JWT signed with the configured secret
    clera watch ACCOUNT [--url --token]   one portfolio over the WebSocket, reconnecting on its own
    clera chat ACCOUNT [--url --token]    talk to the assistant; confirm, edit or cancel its orders
    clera config --markdown          the configuration table of the README
    clera closure monitor ...        account closures' logs and progress (--account/--user/--all)
    clera status                     one screen: nodes, actors, feed, ticks/s, sockets, chat, closures
    clera profiles collect ...       company profiles from FMP into the store (rate-limited, resumable)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine import logs
from engine.auth import generate_secret, mint_jwt
from engine.config import ConfigError, Settings, is_secret, load_settings, markdown_table

if TYPE_CHECKING:
    from actors.status import SystemStatus

console = Console()
SECRETS_FILE = "dev-secrets.json"
RAY_TOKEN_FILE = Path.home() / ".ray" / "auth_token"  # where Ray keeps the token of a cluster it started
POLICY_VIOLATION = 1008
NEW_YORK = ZoneInfo("America/New_York")


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
        print(f"{name}={'***' if is_secret(name, value) else value}")
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
        except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
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
    return f"ws://{settings.host}:{settings.socket_port}"


def watch_latency_s(snapshot: dict[str, Any], received_at: float) -> float | None:
    """Wall time from the newest tick's entry into the engine (else the publish) to this terminal.

    Never from `as_of`: that is the tick's market time, years in the past under replay."""
    since = snapshot.get("ingest_ts") or snapshot.get("publish_ts")
    return None if not since else max(0.0, received_at - since)


def market_time(moment: float | None) -> str:
    """A market moment (unix seconds) on the exchange's clock, e.g. `2012-06-04 10:31:05 ET`."""
    if not moment:
        return "?"
    return dt.datetime.fromtimestamp(moment, NEW_YORK).strftime("%Y-%m-%d %H:%M:%S ET")


def _portfolio_view(account: str, frame: dict[str, Any] | None, status: str, received_at: float = 0.0) -> Group:
    header = Text.assemble(("clera watch ", "bold"), (account, "cyan"), "  ", (status, "dim"))
    if frame is None:
        return Group(header, Text("waiting for the first snapshot ..."))
    snap = frame.get("snapshot", {})
    change_style = "green" if frame.get("raw_return", 0) >= 0 else "red"
    latency = watch_latency_s(snap, received_at)
    summary = Text.assemble(
        ("value ", "dim"), (frame["total_value"], "bold"), ("   today ", "dim"), (frame["today_return"], change_style),
        ("   seq ", "dim"), str(frame.get("seq")), ("   source ", "dim"), str(frame.get("source") or "?"),
        ("   market time ", "dim"), market_time(snap.get("as_of")),
        ("   latency ", "dim"), "?" if latency is None else f"{latency * 1000:.0f} ms",
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
    state: dict[str, Any] = {"frame": None, "status": "connecting", "received_at": 0.0}

    async def run() -> None:
        with Live(_portfolio_view(args.account, None, "connecting"), console=console, refresh_per_second=8) as live:
            def redraw() -> None:
                live.update(_portfolio_view(args.account, state["frame"], state["status"], state["received_at"]))

            def on_frame(frame: dict[str, Any]) -> None:
                if frame.get("type") == "portfolio_update":
                    state["frame"], state["received_at"] = frame, time.time()
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
    console.print(
        f"[bold yellow]confirmation needed[/bold yellow] (expires {interrupt['expires_at']}): "
        f"{order['side']} {(order.get('notional') and '$' + order['notional']) or order.get('qty') + ' shares'} "
        f"of {order['symbol']}, about {order['estimated_qty']} shares at ${order['estimated_price']}, "
        f"market {'open' if order['market_open'] else 'closed (queued for the next open)'}"
    )
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
            answer: dict[str, Any] = response.json()
            return answer

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
    from engine import world
    from engine.clock import ReplayClock, clock_from_settings
    from engine.console import run_console
    from engine.redis_server import redis_from_settings
    from gateway import demo

    _stop_on_sigterm()
    settings = load_settings()
    if args.host:
        os.environ["CLERA_HOST"] = args.host
    if args.port:
        os.environ["CLERA_PORT"] = str(args.port)
    if args.fresh and not _fresh_world(settings):
        return 2
    settings.data_path.mkdir(parents=True, exist_ok=True)
    key_configured = settings.backend_api_key is not None
    os.environ.update(ensure_dev_secrets(settings))
    embedded = None
    keeper: world.PositionKeeper | None = None
    stop = threading.Event()
    try:
        redis_url, embedded = redis_from_settings(settings)
        os.environ["REDIS_URL"] = redis_url
        if settings.ray_address and embedded is not None:
            console.print("[yellow]joining a Ray cluster with an embedded Redis: only this machine can reach it; "
                          "set REDIS_URL for a real cluster[/yellow]")
        if settings.feed == "replay" and settings.replay_epoch is None:
            os.environ["CLERA_REPLAY_EPOCH"] = repr(_resume_epoch(settings))  # once, for every process started below
        settings = load_settings()
        logs.configure(settings.log_format)
        if settings.feed == "replay":
            clock = clock_from_settings(settings)
            assert isinstance(clock, ReplayClock)  # what CLERA_FEED=replay runs on
            keeper = world.PositionKeeper(settings, clock)
        if not settings.ray_address:
            # Ray starts here, so its processes inherit this environment: every setting (those of .env
            # too, secrets included, never as a Ray argument) and Serve's switches. A cluster's nodes
            # have their own (cluster.yaml). Local replicas drain for 2 s on shutdown, not a load balancer's 30.
            os.environ.update(serve_app.settings_environ(settings))
            os.environ.update(serve_app.direct_ingress_environ(settings))
            os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
        if keeper is not None:
            keeper.start()
        with console.status("starting Ray, the engine and the gateway ..."):
            context = ray.init(
                address=settings.ray_address or "local", namespace=settings.ray_namespace,
                include_dashboard=args.dashboard, dashboard_port=args.dashboard_port, logging_level=logging.WARNING,
            )
            _stop_on_sigterm()  # again: ray.init puts its own SIGTERM handler in (it logs the signal, then aborts)
            store = store_from_settings(settings)
            load_default_company_profiles(store)
            broker = process_broker(settings, redis_url) if settings.broker == "paper" else None
            holdings = demo.demo_holdings(settings.demo_accounts_file)
            demo.create_demo_accounts(store, broker, holdings)
            targets = demo.demo_targets(store, holdings)
            topology.start_topology(settings, redis_url)
            serve.start(http_options={"host": settings.host, "port": settings.port})
            serve.run(serve_app.gateway_app(settings), name="clera", route_prefix="/")
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
        if context.dashboard_url:
            say(f"Ray dashboard: http://{context.dashboard_url}")
        gcs = context.address_info["gcs_address"]  # type: ignore[attr-defined]  # ray.init answers a RayContext
        say(f"Ray: {gcs}  (`clera status` finds it; elsewhere set RAY_ADDRESS to it)")
        # a key the operator set is theirs to know: only a generated development key is shown
        say(
            f"API key (X-API-Key):  {'BACKEND_API_KEY (as configured)' if key_configured else settings.backend_api_key}"
        )
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
            say("output is not a terminal: no live table; Ctrl-C (SIGINT) or SIGTERM stops")
            stop.wait()
    except KeyboardInterrupt:
        console.print("stopping ...")
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        return 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        stop.set()
        if ray.is_initialized():
            if not settings.ray_address:
                with contextlib.suppress(Exception):
                    serve.shutdown()
            ray.shutdown()
        if keeper is not None:
            keeper.close()  # everything that writes the ledger has stopped: the world stops here
        if embedded is not None:
            embedded.close()
    return 0


def _fresh_world(settings: Settings) -> bool:
    """`--fresh`: says so, then removes the old world's files (never without the flag); False if it cannot."""
    if settings.database_url or settings.store == "supabase":
        console.print("[red]--fresh removes the paper world kept in CLERA_DATA_DIR, but this one's ledger or store is "
                      "in DATABASE_URL / Supabase, which clera does not empty: clear those tables yourself and start "
                      "without --fresh[/red]")
        return False
    from agents.memory import CHECKPOINT_FILE
    from engine import world

    entries = world.world_entries(settings, [settings.sqlite_path.name, CHECKPOINT_FILE])
    names = ", ".join(e.name for e in entries) or "nothing to remove"
    console.print(f"--fresh: starting a new paper world; the old one in {settings.data_path} goes ({names})",
                  soft_wrap=True)
    world.remove(entries)
    return True


def _resume_epoch(settings: Settings) -> float:
    """The replay epoch that continues the persisted world where it stopped (its saved market time, never
    before the ledger's newest record), or that starts a new one at CLERA_REPLAY_START now."""
    floor = None
    if settings.broker == "paper":
        from brokerage.paper import newest_record
        from brokerage.sql import Database

        db = Database.for_settings(settings.database_url, settings.sqlite_path)
        try:
            floor = newest_record(db)
        finally:
            db.close()
    from engine import world

    epoch, reached = world.resume_epoch(settings, floor, time.time())
    if reached is None:
        console.print(f"a new paper world: the replay starts at {settings.replay_start.isoformat()}")
    else:
        console.print(f"continuing the paper world at {market_time(reached.timestamp())} "
                      "(`clera serve --fresh` starts a new one)")
    return epoch


def _stop_on_sigterm() -> None:
    """SIGTERM (what systemd, Docker and Kubernetes send) stops `clera serve` as Ctrl-C does, through
    the same clean-up: Serve, Ray and the embedded redis-server end with it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


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


# --- clera status --------------------------------------------------------------------------
def _status_view(status: SystemStatus, address: str) -> Group:
    """Node ids cut to their first 8 characters: enough to tell a handful of nodes apart."""
    nodes = Table(title="nodes", title_justify="left", header_style="bold", box=None)
    for column in ("node", "address", "state", "CPUs", "types"):
        nodes.add_column(column)
    for n in status.nodes:
        nodes.add_row(n.node_id[:8], n.address, Text("alive", "green") if n.alive else Text("dead", "red"),
                      f"{n.cpus:g}", ", ".join(n.node_types) or "-")
    actors = Table(title="actors", title_justify="left", header_style="bold", box=None)
    for column in ("name", "state", "restarts", "node", "pid"):
        actors.add_column(column)
    for a in status.actors:
        actors.add_row(a.name, Text(a.state, "green" if a.state == "ALIVE" else "yellow"),
                       Text(str(a.restarts), "yellow" if a.restarts else ""), a.node_id[:8], str(a.pid))
    feed = status.feed or {}
    feed_state = (Text(f"{feed.get('source')} connected", "green") if feed.get("connected")
                  else Text(f"{feed.get('source', 'feed')} DOWN {feed.get('error') or ''}", "red"))
    rate = "?" if status.ticks_per_s is None else f"{status.ticks_per_s:,.0f}"
    engine = Text.assemble(
        ("feed ", "dim"), feed_state, ("   subscribed ", "dim"), str(feed.get("subscribed", "?")),
        ("   reconnects ", "dim"), str(feed.get("reconnects", "?")), ("   ticks/s ", "dim"), rate,
        ("   shards ", "dim"), f"{status.shards_alive}/{status.shards_expected}",
    )
    orders = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(status.orders.items())) or "0"
    traffic = Text.assemble(
        ("open sockets ", "dim"), f"{status.open_sockets:,.0f}", ("   chat turns ", "dim"), f"{status.chat_turns:,.0f}",
        ("   orders ", "dim"), orders, ("   metrics from ", "dim"), f"{status.metrics_nodes}/{len(status.nodes)} nodes",
    )
    steps = ", ".join(f"{a} ({step})" for a, step in sorted(status.closures.items())) or "none"
    closures = Text.assemble(("closures in progress ", "dim"), str(len(status.closures)), "  ", (steps, ""))
    header = Text.assemble(("clera status ", "bold"), (address, "cyan"), "  ",
                           (time.strftime("%H:%M:%S", time.localtime(status.taken_at)), "dim"))
    return Group(header, engine, traffic, closures, Text(""), nodes, Text(""), actors)


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings()
    address = settings.ray_address or "auto"
    if "RAY_AUTH_MODE" not in os.environ and RAY_TOKEN_FILE.is_file():
        # a Ray started by `clera serve` requires the token it saved there, and Ray's client sends it
        # only in token mode (a cluster without authentication accepts a client that sends one); Ray
        # reads the mode when it is imported
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    from actors import status

    try:
        ray.init(address=address, namespace=settings.ray_namespace, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        console.print(f"[red]no Ray cluster at {address}: {exc}[/red]")
        return 2
    try:
        console.print(_status_view(asyncio.run(status.gather(settings)), address))
    finally:
        ray.shutdown()
    return 0


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
    serve_p.add_argument(
        "--fresh", action="store_true",
        help="start a new paper world: remove the ledger, store, chats, closure logs, outbox and replay position "
        "kept in CLERA_DATA_DIR (default: continue the persisted world where it stopped)",
    )
    serve_p.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                         help="start the local Ray without its dashboard")
    serve_p.add_argument("--dashboard-port", type=int,
                         help="port of the Ray dashboard (default: 8265, or the next free one)")
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
    status_p = sub.add_parser("status", help="one screen of a running system (RAY_ADDRESS, else the local Ray)")
    status_p.set_defaults(func=cmd_status)
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
