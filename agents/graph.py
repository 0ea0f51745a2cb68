"""The agent graph: a supervisor routes each turn to the financial analyst, the portfolio manager or
the trade agent (or several, in order), each a tool-calling loop over its own tools only.

Orders: the trade agent's `buy`/`sell` tools only check and describe an order. When one comes back
ready, the graph moves to `confirm`, which calls LangGraph's `interrupt()` with exactly that order
and stops. Only a resume carrying `{"decision": "confirm"}` places it, with a client order id derived
from the interrupt, so resuming twice never places twice. A tool call naming a tool its agent does
not hold is answered with an error and never runs, whatever the model asked.

`graph` is compiled without a checkpointer so LangGraph tooling can supply its own (`langgraph.json`);
`agents.runner` compiles the same builder with the SQLite or PostgreSQL checkpointer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from agents import prompts
from agents.catalogue import (
    AGENTS,
    ORDER_TOOLS,
    ROUTE_TOOL,
    SINGLE_ORDER_TOOLS,
    TOOLS_OF,
)
from agents.deps import AgentDeps, account_of, deps_of
from agents.messages import turn_start
from agents.tools import analyst, portfolio, trade  # noqa: F401  (registers the tools)
from agents.tools.registry import REGISTRY, as_data
from brokerage.errors import BrokerageError
from brokerage.models import Order
from engine import metrics
from engine.chat import ChatInterrupt, PendingOrder, iso_utc

SUPERVISOR = "supervisor"
TOOLS = "tools"
CONFIRM = "confirm"
NEXT_ORDER = "next_order"
PLACE_ORDER = "place_order"
MAX_TOOL_ROUNDS = 4  # tool-calling rounds per agent per turn before it must answer


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    plan: list[str]
    pending: dict[str, Any] | None
    queue: list[dict[str, str]]  # a rebalance's orders still to show, one confirmation each


def _route(agents: list[Literal["financial_analyst", "portfolio_management", "trade_execution"]]) -> None:
    """Hand the person's latest message to these specialists, in this order."""


ROUTE_SCHEMA = StructuredTool.from_function(func=_route, name=ROUTE_TOOL)


async def supervisor(state: ChatState, config: RunnableConfig) -> Command[Any]:
    deps = deps_of(config)
    model = deps.model_with(SUPERVISOR, [ROUTE_SCHEMA])
    reply = await model.ainvoke([SystemMessage(prompts.SUPERVISOR), *state["messages"]], config)
    for call in reply.tool_calls:
        if call["name"] == ROUTE_TOOL:
            wanted = call["args"].get("agents") or []
            agents = list(dict.fromkeys(a for a in wanted if a in AGENTS))
            if agents:
                return Command(goto=agents[0], update={"plan": agents[1:]})
    text = reply.content if isinstance(reply.content, str) and reply.content.strip() else (
        "I can help with quotes, company information, a stock's performance, your portfolio, its risk, "
        "rebalancing, your account activity and cash, and buying or selling. What would you like to do?"
    )
    answer = AIMessage(  # the reply's id: a stream has already carried its words under that id
        id=reply.id, content=text, name=SUPERVISOR, additional_kwargs=reply.additional_kwargs,
        usage_metadata=reply.usage_metadata, response_metadata=reply.response_metadata,
    )
    return Command(goto=END, update={"messages": [answer], "plan": []})


def _agent_node(agent: str) -> Any:  # a node for add_node, whose Protocols a Callable type does not meet
    schemas = [REGISTRY[name].schema for name in TOOLS_OF[agent]]

    async def run(state: ChatState, config: RunnableConfig) -> Command[Any]:
        deps = deps_of(config)
        messages = state["messages"]
        rounds = sum(
            1 for m in messages[turn_start(messages):] if isinstance(m, AIMessage) and m.name == agent and m.tool_calls
        )
        model = deps.model if rounds >= MAX_TOOL_ROUNDS else deps.model_with(agent, schemas)
        reply = await model.ainvoke([SystemMessage(prompts.agent_prompt(agent)), *messages], config)
        reply.name = agent
        if reply.tool_calls and rounds < MAX_TOOL_ROUNDS:
            return Command(goto=TOOLS, update={"messages": [reply]})
        if reply.tool_calls:  # out of rounds: keep the words, drop calls nobody will answer
            reply = AIMessage(content=reply.content, name=agent, usage_metadata=reply.usage_metadata)
        if agent == trade.AGENT and state.get("queue"):
            return Command(goto=NEXT_ORDER, update={"messages": [reply]})
        plan = state.get("plan") or []
        return Command(goto=plan[0] if plan else END, update={"messages": [reply], "plan": plan[1:]})

    run.__name__ = agent
    return run


def tool_message(call_id: str, name: str, result: Any) -> ToolMessage:
    return ToolMessage(content=json.dumps(result, default=str), tool_call_id=call_id, name=name)


def _run_tool(deps: AgentDeps, account_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    try:
        return REGISTRY[name].run(deps, account_id, args)
    except BrokerageError as exc:
        return {"error": exc.message, "code": exc.code}


def new_pending(order: dict[str, Any], ttl_s: float, batch: bool = False) -> dict[str, Any]:
    """A prepared order waiting for the person: its interrupt id, when the confirmation expires, and
    whether it is one of a rebalance's orders (then cancel skips it and the next is shown)."""
    return {"id": uuid.uuid4().hex, "order": order, "expires_at": time.time() + ttl_s, "batch": batch}


async def tools(state: ChatState, config: RunnableConfig) -> Command[Any]:
    deps = deps_of(config)
    account_id = account_of(config)
    call_message = state["messages"][-1]
    assert isinstance(call_message, AIMessage)
    agent = call_message.name or ""
    allowed = TOOLS_OF.get(agent, ())
    results: list[ToolMessage] = []
    pending: dict[str, Any] | None = None
    queue: list[dict[str, str]] | None = None
    for call in call_message.tool_calls:
        name = call["name"]
        if name not in allowed:
            result: dict[str, Any] = {"error": f"{name} is not a tool of the {agent} agent; it was not run"}
        elif name in ORDER_TOOLS and (pending is not None or queue is not None):
            result = {"error": "one order at a time: confirm or cancel the order shown first"}
        else:
            result = await asyncio.to_thread(_run_tool, deps, account_id, name, call["args"])
            if name in SINGLE_ORDER_TOOLS and result.get("status") == trade.AWAITING:
                pending = new_pending(result["order"], deps.settings.confirm_ttl_s)
            elif result.get("status") == trade.PLANNED:
                queue = list(result["orders"])
        results.append(tool_message(call["id"] or uuid.uuid4().hex, name, result))
    if pending is not None:
        return Command(goto=CONFIRM, update={"messages": results, "pending": pending})
    if queue is not None:
        intro = AIMessage(
            content=f"To rebalance: {len(queue)} orders, sells first, shown one at a time. Confirm each, "
            "cancel to skip one, or send a new message to stop.",
            name=trade.AGENT,
        )
        return Command(goto=NEXT_ORDER, update={"messages": [*results, intro], "queue": queue})
    return Command(goto=agent, update={"messages": results})


async def next_order(state: ChatState, config: RunnableConfig) -> Command[Any]:
    """The next order of a rebalance, checked now (prices and cash have moved) and shown for confirmation;
    one the checks refuse is skipped and said so."""
    deps = deps_of(config)
    account_id = account_of(config)
    queue = list(state.get("queue") or [])
    messages: list[AnyMessage] = []
    skipped: list[str] = []
    while queue:
        item = queue.pop(0)
        args = {"symbol": item["symbol"], "notional": item["notional"], "qty": ""}
        call_id = f"queued-{uuid.uuid4().hex}"
        result = await asyncio.to_thread(_run_tool, deps, account_id, item["side"], args)
        messages += [
            AIMessage(content="", name=trade.AGENT,
                      tool_calls=[{"name": item["side"], "args": args, "id": call_id, "type": "tool_call"}]),
            tool_message(call_id, item["side"], result),
        ]
        if result.get("status") == trade.AWAITING:
            pending = new_pending(result["order"], deps.settings.confirm_ttl_s, batch=True)
            return Command(goto=CONFIRM, update={"messages": messages, "queue": queue, "pending": pending})
        skipped.append(f"{item['side']} ${item['notional']} of {item['symbol']} ({result.get('error')})")
    done = "That was the last order of the rebalance."
    if skipped:
        done += " Skipped because the checks refused them: " + "; ".join(skipped) + "."
    messages.append(AIMessage(content=done, name=trade.AGENT))
    return Command(goto=END, update={"messages": messages, "queue": []})


def describe(order: PendingOrder) -> str:
    amount = f"${order.notional} of {order.symbol}" if order.notional else f"{order.qty} shares of {order.symbol}"
    estimate = (
        f"about {order.estimated_qty} shares at ${order.estimated_price}" if order.notional
        else f"about ${Decimal(order.qty or 0) * Decimal(order.estimated_price):,.2f} at ${order.estimated_price}"
    )
    timing = "The market is open: it would fill now." if order.market_open else (
        "The market is closed: it would be queued for the next open."
    )
    return (
        f"{order.side.capitalize()} {amount} ({estimate}) in account {order.account_id}, as a market order. "
        f"{timing} Confirm, edit or cancel."
    )


def interrupt_of(pending: dict[str, Any]) -> ChatInterrupt:
    order = msgspec.convert(pending["order"], PendingOrder)
    return ChatInterrupt(id=pending["id"], order=order, expires_at=iso_utc(pending["expires_at"]),
                         message=describe(order))


def client_order_id(interrupt_id: str) -> str:
    return f"clera-{interrupt_id}"


def place(deps: AgentDeps, account_id: str, pending: dict[str, Any]) -> dict[str, Any]:
    """Places the confirmed order once: both brokers answer a repeated client order id with the order
    it already placed, so a confirm that runs twice (two replicas, a retry) cannot buy twice."""
    order = msgspec.convert(pending["order"], PendingOrder)
    if order.account_id != account_id:  # never: the order was prepared on this thread's account
        return {"status": "refused", "error": "the order belongs to another account; nothing was placed"}
    try:
        placed: Order = deps.broker.submit_order(account_id, trade.order_request(order, client_order_id(pending["id"])))
    except BrokerageError as exc:
        metrics.sink().record(metrics.ORDERS, 1, {"outcome": "rejected", "path": "chat", "reason": exc.code})
        return {"status": "refused", "error": exc.message, "code": exc.code}
    metrics.sink().record(metrics.ORDERS, 1, {"outcome": "placed", "path": "chat", "reason": ""})
    return {"status": "placed", "order": as_data(placed)}


async def confirm(state: ChatState, config: RunnableConfig) -> Command[Any]:
    pending = state.get("pending")
    if not pending:
        return Command(goto=END)
    answer = interrupt(msgspec.to_builtins(interrupt_of(pending)))
    decision = answer.get("decision") if isinstance(answer, dict) else None
    deps = deps_of(config)
    account_id = account_of(config)
    if decision == "confirm":
        call_id = f"{PLACE_ORDER}-{pending['id']}"
        result = await asyncio.to_thread(place, deps, account_id, pending)
        call = AIMessage(
            content="", name=trade.AGENT,
            tool_calls=[{"name": PLACE_ORDER, "args": pending["order"], "id": call_id, "type": "tool_call"}],
        )
        return Command(
            goto=trade.AGENT,
            update={"messages": [call, tool_message(call_id, PLACE_ORDER, result)], "pending": None},
        )
    if decision == "edit":
        return await _edited(deps, account_id, pending, answer.get("edit") or {})
    if decision == "cancel" and pending.get("batch"):
        skipped = AIMessage(content="Skipped: that order was not placed.", name=trade.AGENT)
        return Command(goto=NEXT_ORDER, update={"messages": [skipped], "pending": None})
    reason = {
        "cancel": "Canceled: no order was placed.",
        "expired": "The confirmation expired, so the order was dropped: nothing was placed.",
        "superseded": "The order waiting for confirmation was dropped when a new message arrived: nothing was "
        "placed. Orders are confirmed only with the confirm button.",
    }.get(decision or "", "The order was dropped: nothing was placed.")
    if state.get("queue"):
        reason += " The rest of the rebalance was dropped too."
    return Command(
        goto=END, update={"messages": [AIMessage(content=reason, name=trade.AGENT)], "pending": None, "queue": []}
    )


async def _edited(deps: AgentDeps, account_id: str, pending: dict[str, Any], edit: dict[str, Any]) -> Command[Any]:
    """The order with the person's changes, checked again from scratch and shown again."""
    order = pending["order"]
    symbol = edit.get("symbol") or order["symbol"]
    notional, qty = order.get("notional") or "", order.get("qty") or ""
    if edit.get("notional"):
        notional, qty = str(edit["notional"]), ""
    if edit.get("qty"):
        notional, qty = "", str(edit["qty"])
    args = {"symbol": symbol, "notional": notional, "qty": qty}
    call_id = f"edit-{uuid.uuid4().hex}"
    side = order["side"]
    result = await asyncio.to_thread(_run_tool, deps, account_id, side, args)
    messages: list[AnyMessage] = [
        AIMessage(
            content="", name=trade.AGENT, tool_calls=[{"name": side, "args": args, "id": call_id, "type": "tool_call"}]
        ),
        tool_message(call_id, side, result),
    ]
    if result.get("status") != trade.AWAITING:
        messages.append(AIMessage(
            content=f"The edited order was refused: {result.get('error')}. Nothing was placed.", name=trade.AGENT
        ))
        return Command(goto=NEXT_ORDER if pending.get("batch") else END, update={"messages": messages, "pending": None})
    renewed = new_pending(result["order"], deps.settings.confirm_ttl_s, batch=bool(pending.get("batch")))
    return Command(goto=CONFIRM, update={"messages": messages, "pending": renewed})


def build() -> StateGraph[Any, Any, Any, Any]:
    builder = StateGraph(ChatState)
    builder.add_node(SUPERVISOR, supervisor, destinations=(*AGENTS, END))
    for agent in AGENTS:
        builder.add_node(agent, _agent_node(agent), destinations=(TOOLS, *AGENTS, NEXT_ORDER, END))
    builder.add_node(TOOLS, tools, destinations=(*AGENTS, CONFIRM, NEXT_ORDER))
    builder.add_node(CONFIRM, confirm, destinations=(trade.AGENT, CONFIRM, NEXT_ORDER, END))
    builder.add_node(NEXT_ORDER, next_order, destinations=(CONFIRM, END))
    builder.add_edge(START, SUPERVISOR)
    return builder


graph = build().compile()
