"""Runs conversations: the graph with its checkpointer, thread ownership, confirmations and streaming.

This is the `ChatRunner` the gateway calls, in-process under uvicorn (tests, benchmarks) or inside
the `AgentGraph` Serve deployment. It checks that a thread is the caller's before anything else
(an unknown thread answers like someone else's), runs one turn at a time per thread, and is the
only way a waiting order is confirmed: `resume` with `decision: "confirm"`. A new message on a
thread that waits for a confirmation drops the waiting order first, so no free text ever confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Literal, cast

import httpx
import msgspec
import openai
from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Interrupt

from agents.catalogue import AGENTS, NO_AGENT
from agents.deps import ACCOUNT_KEY, DEPS_KEY, USER_KEY, AgentDeps
from agents.graph import CONFIRM, NEXT_ORDER, SUPERVISOR, TOOLS, build
from agents.memory import checkpointer
from agents.threads import ThreadRecord, ThreadRegistry
from brokerage.errors import Conflict, Forbidden, InvalidRequest, Unavailable
from engine.chat import (
    MAX_MESSAGE_CHARS,
    ChatEvent,
    ChatInterrupt,
    ChatStep,
    ChatTurn,
    Decision,
    OrderEdit,
    ThreadDetail,
    ThreadMessage,
    ThreadSummary,
    iso_utc,
)

log = logging.getLogger("clera.agents")

INTERRUPT = "__interrupt__"  # where LangGraph puts a run's interrupts in its output
# A turn's state is saved when it ends or stops at a confirmation, not after every step: a crash
# mid-turn loses that turn only, and a confirmation re-run after a crash places nothing twice
# (the client order id is the interrupt's).
Graph = CompiledStateGraph[Any, Any, Any, Any]  # the chat graph; its state is a plain dict
DURABILITY: Final = "exit"
# What an OpenAI-compatible server that is down, slow, overloaded or refusing our key raises.
MODEL_DOWN = (openai.APIError, httpx.HTTPError)
USAGE_KEYS: tuple[Literal["input_tokens", "output_tokens", "total_tokens"], ...] = (
    "input_tokens", "output_tokens", "total_tokens"
)


class AgentRunner:
    def __init__(self, deps: AgentDeps, registry: ThreadRegistry) -> None:
        self.deps = deps
        self.registry = registry
        self._graph: Graph | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._opening = asyncio.Lock()
        # a thread's lock lives while a turn holds or waits for it
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def _compiled(self) -> Graph:
        """The graph on the checkpointer, opened once, on first use, inside the loop that serves the calls
        (concurrent first turns wait for the one that opens it)."""
        async with self._opening:
            if self._graph is None:
                stack = contextlib.AsyncExitStack()
                saver = await stack.enter_async_context(checkpointer(self.deps.settings))
                self._stack, self._graph = stack, build().compile(checkpointer=saver)
        return self._graph

    async def aclose(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = self._graph = None

    # -- ownership ---------------------------------------------------------------------------------
    async def _owned(self, user_id: str, thread_id: str) -> ThreadRecord:
        record = await asyncio.to_thread(self.registry.get, thread_id)
        if record is None or record.user_id != user_id:
            raise Forbidden("you have no conversation with this id", code="forbidden", details={"threadId": thread_id})
        return record

    async def _thread_for(self, user_id: str, account_id: str, thread_id: str | None, message: str) -> ThreadRecord:
        if not message.strip():
            raise InvalidRequest("message must not be empty", details={"field": "message"})
        if len(message) > MAX_MESSAGE_CHARS:
            raise InvalidRequest(f"message is longer than {MAX_MESSAGE_CHARS} characters", details={"field": "message"})
        if thread_id is None:
            return await asyncio.to_thread(self.registry.create, uuid.uuid4().hex, user_id, account_id, message)
        record = await self._owned(user_id, thread_id)
        if record.account_id != account_id:
            raise InvalidRequest(
                "this conversation belongs to another of your accounts; start a new one for this account",
                code="thread_account_mismatch", details={"threadId": thread_id, "accountId": record.account_id},
            )
        return record

    def _config(self, record: ThreadRecord) -> RunnableConfig:
        """The thread's run configuration; its callback counts the tokens of every model call of the turn
        (the supervisor's routing call included, whose message is not kept)."""
        return {
            "configurable": {
                "thread_id": record.thread_id, DEPS_KEY: self.deps, ACCOUNT_KEY: record.account_id,
                USER_KEY: record.user_id,
            },
            "callbacks": [UsageMetadataCallbackHandler()],
        }

    @contextlib.asynccontextmanager
    async def _turn_of(self, record: ThreadRecord) -> AsyncIterator[tuple[Graph, RunnableConfig]]:
        """One turn at a time per thread in this process (a second waits for the first to finish)."""
        lock = self._locks.get(record.thread_id)
        if lock is None:
            lock = self._locks[record.thread_id] = asyncio.Lock()
        async with lock:
            try:
                yield await self._compiled(), self._config(record)
            except MODEL_DOWN as exc:  # the model's server, not the person: 503, and the thread stays usable
                log.warning("chat model call failed on thread %s: %s", record.thread_id, type(exc).__name__,
                            extra={"thread_id": record.thread_id, "account_id": record.account_id})
                raise Unavailable(
                    "the assistant's language model did not answer; nothing was placed, please retry",
                    code="model_unavailable",
                ) from None
        await asyncio.to_thread(self.registry.touch, record.thread_id)

    # -- turns -------------------------------------------------------------------------------------
    async def chat(self, user_id: str, account_id: str, thread_id: str | None, message: str) -> ChatTurn:
        record = await self._thread_for(user_id, account_id, thread_id, message)
        async with self._turn_of(record) as (graph, config):
            before = await self._start_turn(graph, config, thread_id is None)
            values = await graph.ainvoke({"messages": [HumanMessage(content=message)]}, config, durability=DURABILITY)
            return self._turn(values, config, record, before)

    async def resume(
        self, user_id: str, thread_id: str, interrupt_id: str, decision: Decision, edit: OrderEdit | None
    ) -> ChatTurn:
        record = await self._owned(user_id, thread_id)
        if decision == "edit":
            _check_edit(edit)
        async with self._turn_of(record) as (graph, config):
            state = await graph.aget_state(config)
            pending = state.values.get("pending") if state.interrupts else None
            if pending is None:
                raise Conflict("this conversation is not waiting for a confirmation", code="not_waiting")
            if pending["id"] != interrupt_id:
                raise Conflict(
                    "interruptId is not the confirmation this conversation waits for", code="stale_interrupt"
                )
            if pending["expires_at"] <= time.time():
                await graph.ainvoke(Command(resume={"decision": "expired"}), config, durability=DURABILITY)
                raise Conflict("the confirmation expired: nothing was placed; ask again to get a new one",
                               code="confirmation_expired")
            before = len(state.values.get("messages", []))
            answer: dict[str, Any] = {"decision": decision}
            if decision == "edit" and edit is not None:
                answer["edit"] = {k: str(v) for k, v in msgspec.structs.asdict(edit).items() if v not in (None, "")}
            values = await graph.ainvoke(Command(resume=answer), config, durability=DURABILITY)
            return self._turn(values, config, record, before)

    async def stream(
        self, user_id: str, account_id: str, thread_id: str | None, message: str
    ) -> AsyncIterator[ChatEvent]:
        """The turn as events; ownership and input are checked before the first event, so a refusal
        raises instead of starting a stream."""
        record = await self._thread_for(user_id, account_id, thread_id, message)
        async with self._turn_of(record) as (graph, config):
            before = await self._start_turn(graph, config, thread_id is None)
            tokens = _Tokens()
            state = await graph.aget_state(config)
            for m in state.values.get("messages", [])[before:]:  # the note of a dropped confirmation
                if isinstance(m, AIMessage) and m.content:
                    yield tokens.piece(str(m.content), m.name, m.id)
            calls: dict[str, tuple[str, str, dict[str, Any]]] = {}
            # with a list of stream modes each item is (mode, data), which langgraph's annotations do not say
            stream = cast("AsyncIterator[tuple[str, Any]]", graph.astream(
                {"messages": [HumanMessage(content=message)]}, config, stream_mode=["messages", "updates", "values"],
                durability=DURABILITY,
            ))
            values: dict[str, Any] = {}
            async for mode, data in stream:
                if mode == "values":
                    values = data
                    continue
                if mode == "messages":
                    chunk, meta = data
                    node = meta.get("langgraph_node")
                    if isinstance(chunk, AIMessage) and isinstance(chunk.content, str) and chunk.content and node in (
                        SUPERVISOR, *AGENTS
                    ):
                        yield tokens.piece(chunk.content, node, chunk.id)
                    continue
                for node, update in data.items():
                    if node == INTERRUPT:
                        values = {**values, INTERRUPT: update}
                    if node not in (*AGENTS, TOOLS, CONFIRM, NEXT_ORDER) or not isinstance(update, dict):
                        continue
                    new = update.get("messages") or []
                    for step in _steps(new, calls):
                        yield ChatEvent(event="step", data=step)
                    if node not in AGENTS:  # words the graph itself wrote (a model's come as chunks above)
                        for m in new:
                            if isinstance(m, AIMessage) and isinstance(m.content, str) and m.content:
                                yield tokens.piece(m.content, m.name, m.id)
            turn = self._turn(values, config, record, before)
            if turn.interrupt is not None:
                yield ChatEvent(event="interrupt", data=turn.interrupt)
            yield ChatEvent(event="done", data=turn)

    async def _start_turn(self, graph: Graph, config: RunnableConfig, new: bool) -> int:
        """Counts the messages before the turn, then drops an order still waiting for confirmation (the
        turn's reply says so). A thread created for this turn has nothing to read."""
        if new:
            return 0
        state = await graph.aget_state(config)
        if state.interrupts:
            await graph.ainvoke(Command(resume={"decision": "superseded"}), config, durability=DURABILITY)
        return len(state.values.get("messages", []))

    def _turn(self, values: dict[str, Any], config: RunnableConfig, record: ThreadRecord, before: int) -> ChatTurn:
        """The turn from the graph's final values (what `ainvoke` returns, an interrupt included)."""
        new = list(values.get("messages", []))[before:]
        interrupt = _interrupt(values.get(INTERRUPT) or ())
        texts = [str(m.content) for m in new if isinstance(m, AIMessage) and isinstance(m.content, str) and m.content]
        if interrupt is not None:
            texts.append(interrupt.message)
        asked = max((i for i, m in enumerate(new) if isinstance(m, HumanMessage)), default=-1)
        agents = [m.name for m in new[asked + 1:] if isinstance(m, AIMessage) and m.name in AGENTS]
        return ChatTurn(
            threadId=record.thread_id,
            reply="\n\n".join(texts),
            agent=_label(agents[-1] if agents else None),  # type: ignore[arg-type]  # _label answers a name of AGENTS or NO_AGENT: the Literal's values
            steps=_steps(new, {}),
            interrupt=interrupt,
            usage=_usage(config),
        )

    # -- threads -----------------------------------------------------------------------------------
    async def threads(self, user_id: str, account_id: str) -> list[ThreadSummary]:
        records = await asyncio.to_thread(self.registry.of, user_id, account_id)
        return [_summary(r) for r in records]

    async def thread(self, user_id: str, thread_id: str) -> ThreadDetail:
        record = await self._owned(user_id, thread_id)
        graph, config = await self._compiled(), self._config(record)
        state = await graph.aget_state(config)
        messages = [m for m in (_message(x) for x in state.values.get("messages", [])) if m is not None]
        return ThreadDetail(
            threadId=record.thread_id, accountId=record.account_id, title=record.title, messages=messages,
            interrupt=_interrupt(state.interrupts),
        )


class _Tokens:
    """Text events whose concatenation is the turn's reply without the confirmation message (which
    travels as the `interrupt` event): messages are separated by a blank line, as in `reply`."""

    def __init__(self) -> None:
        self._message: str | None = None

    def piece(self, text: str, agent: str | None, message_id: str | None) -> ChatEvent:
        if self._message is not None and message_id != self._message:
            text = "\n\n" + text
        self._message = message_id or ""
        return ChatEvent(event="token", data={"text": text, "agent": _label(agent)})


def _usage(config: RunnableConfig) -> dict[str, int]:
    """Token counts the model reported in this turn, summed over its models (empty when none reports them)."""
    usage: dict[str, int] = {}
    # RunnableConfig allows a callback manager here; the runner always passes a list
    for handler in config.get("callbacks") or []:  # type: ignore[union-attr]
        if isinstance(handler, UsageMetadataCallbackHandler):
            for counts in handler.usage_metadata.values():
                for key in USAGE_KEYS:
                    usage[key] = usage.get(key, 0) + int(counts.get(key, 0) or 0)
    return usage


def _check_edit(edit: OrderEdit | None) -> None:
    if edit is None or not (edit.symbol or edit.notional or edit.qty):
        raise InvalidRequest("decision 'edit' needs edit with symbol, notional or qty", details={"field": "edit"})
    if edit.notional and edit.qty:
        raise InvalidRequest("give notional or qty in an edit, not both", details={"field": "edit"})


def _interrupt(interrupts: Sequence[Interrupt]) -> ChatInterrupt | None:
    return msgspec.convert(interrupts[0].value, ChatInterrupt) if interrupts else None


def _label(agent: str | None) -> str:
    return agent if agent in AGENTS else NO_AGENT


def _steps(messages: list[AnyMessage], calls: dict[str, tuple[str, str, dict[str, Any]]]) -> list[ChatStep]:
    """Every tool call answered in `messages`, in order; `calls` remembers calls seen earlier in a stream."""
    steps = []
    for m in messages:
        if isinstance(m, AIMessage):
            for call in m.tool_calls:
                calls[call["id"] or ""] = (_label(m.name), call["name"], dict(call["args"]))
        elif isinstance(m, ToolMessage):
            agent, tool, args = calls.get(m.tool_call_id, (NO_AGENT, m.name or "", {}))
            try:
                result = json.loads(str(m.content))
            except json.JSONDecodeError:
                result = str(m.content)
            steps.append(ChatStep(agent=agent, tool=tool, args=args, result=result))
    return steps


def _message(m: AnyMessage) -> ThreadMessage | None:
    if isinstance(m, HumanMessage):
        return ThreadMessage(role="user", content=str(m.content))
    if isinstance(m, AIMessage):
        return ThreadMessage(role="assistant", content=str(m.content), agent=_label(m.name)) if m.content else None
    if isinstance(m, ToolMessage):
        return ThreadMessage(role="tool", content=str(m.content), tool=m.name)
    return None


def _summary(record: ThreadRecord) -> ThreadSummary:
    return ThreadSummary(
        threadId=record.thread_id, accountId=record.account_id, title=record.title,
        created_at=iso_utc(record.created_at), updated_at=iso_utc(record.updated_at),
    )
