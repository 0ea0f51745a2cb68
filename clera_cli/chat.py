"""`clera chat ACCOUNT`: talk to the assistant; confirm, edit or cancel the orders it proposes."""

from __future__ import annotations

import argparse
from typing import Any

import httpx
from rich.prompt import Prompt

from clera_cli import console
from clera_cli.dev_secrets import ensure_dev_secrets, user_token
from engine.config import load_settings


def _show_turn(turn: dict[str, Any]) -> None:
    for step in turn["steps"]:
        args = ", ".join(f"{k}={v!r}" for k, v in step["args"].items())
        console.print(f"[dim]{step['agent']} -> {step['tool']}({args})[/dim]")
    console.print(f"[bold cyan]clera[/bold cyan] [dim]({turn['agent']})[/dim]: {turn['reply']}")


def _decide(interrupt: dict[str, Any]) -> dict[str, Any]:
    """The person's answer to a trade confirmation, asked at the terminal."""
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


def run(args: argparse.Namespace) -> int:
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
