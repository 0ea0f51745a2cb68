"""The chat API's wire types and the chat-runner port, shared by the gateway and the agents.

They live in `engine` because both sides need them and neither may import the other: the gateway
documents and encodes these Structs, `agents.runner` produces them, and `serve_app` carries them
between the gateway and the `AgentGraph` deployment. Money travels as decimal strings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

import msgspec

MAX_MESSAGE_CHARS = 4000  # one person's message; the gateway's schema and the runner both hold to it


def iso_utc(ts: float) -> str:
    """A unix time as the API writes times: ISO 8601 in UTC with a `Z`."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


AgentLabel = Literal["financial_analyst", "portfolio_management", "trade_execution", "none"]
Decision = Literal["confirm", "cancel", "edit"]


class ChatStep(msgspec.Struct, kw_only=True):
    """One tool call of a turn and what it returned (a JSON value)."""

    agent: str
    tool: str
    args: dict[str, Any]
    result: Any


class PendingOrder(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The exact order a confirmation would place; `notional` or `qty`, never both."""

    symbol: str
    side: Literal["buy", "sell"]
    account_id: str
    estimated_price: str
    estimated_qty: str
    market_open: bool
    notional: str | None = None
    qty: str | None = None


class ChatInterrupt(msgspec.Struct, kw_only=True):
    id: str
    kind: Literal["trade_confirmation"] = "trade_confirmation"
    order: PendingOrder
    expires_at: str
    message: str


class ChatTurn(msgspec.Struct, kw_only=True):
    threadId: str
    reply: str
    agent: AgentLabel
    steps: list[ChatStep]
    interrupt: ChatInterrupt | None
    usage: dict[str, int]


class ChatEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One Server-Sent Event of `/api/chat/stream`: `event` is the SSE event name, `data` its JSON."""

    event: Literal["token", "step", "interrupt", "done", "error"]
    data: Any


class ThreadSummary(msgspec.Struct, kw_only=True):
    threadId: str
    accountId: str
    title: str
    created_at: str
    updated_at: str


class ThreadsResponse(msgspec.Struct, kw_only=True):
    threads: list[ThreadSummary]


class ThreadMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Literal["user", "assistant", "tool"]
    content: str
    agent: str | None = None
    tool: str | None = None


class ThreadDetail(msgspec.Struct, kw_only=True):
    threadId: str
    accountId: str
    title: str
    messages: list[ThreadMessage]
    interrupt: ChatInterrupt | None


class OrderEdit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Amounts as decimal strings, as the API answers them; JSON numbers are taken too (clients differ)."""

    symbol: str | None = None
    notional: str | int | float | None = None
    qty: str | int | float | None = None


class ChatRunner(Protocol):
    """What the gateway needs from the agents. `user_id` is the verified caller; the runner refuses
    a thread that is not theirs, and acts only on the account the thread was opened for."""

    async def chat(self, user_id: str, account_id: str, thread_id: str | None, message: str) -> ChatTurn: ...

    async def resume(
        self, user_id: str, thread_id: str, interrupt_id: str, decision: Decision, edit: OrderEdit | None
    ) -> ChatTurn: ...

    def stream(
        self, user_id: str, account_id: str, thread_id: str | None, message: str
    ) -> AsyncIterator[ChatEvent]: ...

    async def threads(self, user_id: str, account_id: str) -> list[ThreadSummary]: ...

    async def thread(self, user_id: str, thread_id: str) -> ThreadDetail: ...
