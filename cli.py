"""The `clera` command: run everything locally, mint a development token, watch a portfolio live.

    clera serve                      Ray + Redis + engine + Serve gateway, demo accounts, live table
    clera token --user ID            a development JWT signed with the configured secret
    clera watch ACCOUNT [--url --token]   one portfolio over the WebSocket, reconnecting on its own
    clera chat ACCOUNT [--url --token]    talk to the assistant; confirm, edit or cancel its orders
    clera config --markdown          the configuration table of the README
    clera closure monitor ...        account closures' logs and progress (--account/--user/--all)
    clera status                     one screen: nodes, actors, feed, ticks/s, sockets, chat, closures
    clera profiles collect ...       company profiles from FMP into the store (rate-limited, resumable)

Each command lives in its module of `clera_cli/`; this one parses the arguments and runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from brokerage import profile_command
from brokerage.closure import monitor
from clera_cli import console
from engine.config import ConfigError


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
    serve_p.set_defaults(module="serve")
    token_p = sub.add_parser("token", help="mint a development JWT")
    token_p.add_argument("--user", required=True, help="user id (the token's sub)")
    token_p.add_argument("--ttl", type=float, default=7 * 24 * 3600, help="lifetime in seconds")
    token_p.set_defaults(module="token")
    watch_p = sub.add_parser("watch", help="watch one portfolio live over the WebSocket")
    watch_p.add_argument("account")
    watch_p.add_argument(
        "--url", help="gateway base URL (default: CLERA_HOST:CLERA_DIRECT_PORT, the replica's own port; "
        "CLERA_PORT, Serve's proxy, with CLERA_SERVE_DIRECT_INGRESS=false)",
    )
    watch_p.add_argument("--token", help="user JWT (default: CLERA_TOKEN, or --user with the dev secret)")
    watch_p.add_argument("--user", help="mint a development token for this user id")
    watch_p.set_defaults(module="watch")
    chat_p = sub.add_parser("chat", help="chat with the assistant about one account")
    chat_p.add_argument("account")
    chat_p.add_argument("--url", help="gateway base URL (default: http://CLERA_HOST:CLERA_PORT)")
    chat_p.add_argument("--token", help="user JWT (default: CLERA_TOKEN, or --user with the dev secret)")
    chat_p.add_argument("--user", help="mint a development token for this user id")
    chat_p.add_argument("--api-key", help="X-API-Key (default: BACKEND_API_KEY or the development key)")
    chat_p.add_argument("--thread", help="continue this conversation")
    chat_p.set_defaults(module="chat")
    config_p = sub.add_parser("config", help="print the configuration")
    config_p.add_argument("--markdown", action="store_true", help="the README's configuration table")
    config_p.set_defaults(module="config")
    status_p = sub.add_parser("status", help="one screen of a running system (RAY_ADDRESS, else the local Ray)")
    status_p.set_defaults(module="status")
    closure_p = sub.add_parser("closure", help="account closures")
    closure_sub = closure_p.add_subparsers(dest="closure_command", required=True)
    monitor_p = closure_sub.add_parser(
        "monitor", help="closure logs and progress, colour-coded",
        description="--account ID [--follow], --user ID (or USER_ID) [--recent] [--lines N] [--summary], or --all",
    )
    monitor.add_arguments(monitor_p)
    monitor_p.set_defaults(module="closure")
    profiles_p = sub.add_parser("profiles", help="company profiles")
    profiles_sub = profiles_p.add_subparsers(dest="profiles_command", required=True)
    collect_p = profiles_sub.add_parser("collect", help="fill the store's company profiles from FMP")
    profile_command.add_arguments(collect_p)
    collect_p.set_defaults(module="profiles")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # only the command asked for is loaded: Ray, LangGraph and the ledger take seconds to import
    command = importlib.import_module(f"clera_cli.{args.module}")
    try:
        return int(command.run(args) or 0)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
