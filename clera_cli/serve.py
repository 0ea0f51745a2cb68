"""`clera serve`: Ray, Redis, the engine and the Serve gateway on this machine, the demo accounts, and
a live table of their portfolios until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable

import ray
from ray import serve

import serve_app
from actors import topology
from brokerage.company_profiles import load_default_company_profiles
from brokerage.factory import process_broker
from brokerage.prices import RedisPriceReader
from brokerage.store_factory import store_from_settings
from clera_cli import console
from clera_cli.dev_secrets import ensure_dev_secrets
from clera_cli.watch import default_watch_url
from clera_cli.world import fresh_world, resume_epoch
from engine import logs, world
from engine.auth import mint_jwt
from engine.clock import ReplayClock, clock_from_settings
from engine.config import ConfigError, load_settings
from engine.console import run_console
from engine.redis_server import redis_from_settings
from gateway import demo


def run(args: argparse.Namespace) -> int:
    _stop_on_sigterm()
    settings = load_settings()
    if args.host:
        os.environ["CLERA_HOST"] = args.host
    if args.port:
        os.environ["CLERA_PORT"] = str(args.port)
    if args.fresh and not fresh_world(settings):
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
            os.environ["CLERA_REPLAY_EPOCH"] = repr(resume_epoch(settings))  # once, for every process started below
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
        if settings.native_ws:
            say(f"sockets on the replica's own WebSocket server: ws://{settings.host}:{settings.ws_port}")
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


def _stop_on_sigterm() -> None:
    """SIGTERM (what systemd, Docker and Kubernetes send) stops `clera serve` as Ctrl-C does, through
    the same clean-up: Serve, Ray and the embedded redis-server end with it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _price_reader(redis_url: str) -> Callable[[str], float | None]:
    reader = RedisPriceReader(redis_url)

    def price_of(symbol: str) -> float | None:
        last = reader.last(symbol)
        return None if last is None else last.last

    return price_of
