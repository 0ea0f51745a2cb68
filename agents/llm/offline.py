"""The embedded default model: deterministic intent parsing behind LangChain's chat-model interface.

It plays every role of the graph through the tools it is bound to, the way a real model does: bound
to `route` it routes, bound to an agent's tools it emits real tool calls for what the person asked
(`agents.intents`), and once the results are in it words them (`agents.llm.wording`). It reads only
the person's messages to decide what to do; tool results are only ever worded, never obeyed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from agents.catalogue import ROUTE_TOOL, TOOLS_OF
from agents.intents import Parsed, parse
from agents.llm import wording
from agents.messages import turn_start
from agents.symbols import SymbolResolver

PENDING_KEY = "clera_pending"  # a partial request (e.g. "buy Apple" without an amount) a follow-up completes


class OfflineChatModel(BaseChatModel):
    resolver: SymbolResolver
    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "clera-offline"

    # takes every tool the base does (and its tool_choice, in kwargs); `bind` answers BaseMessage, not AIMessage
    def bind_tools(  # type: ignore[override]
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, BaseMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages, _tool_names(kwargs)))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self.respond(messages, _tool_names(kwargs))
        if reply.tool_calls:
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": json.dumps(c["args"]),
                            "id": c["id"],
                            "index": i,
                            "type": "tool_call_chunk",
                        }
                        for i, c in enumerate(reply.tool_calls)
                    ],
                )
            )
            return
        words = re.findall(r"\S+\s*|\s+", str(reply.content)) or [""]
        for i, word in enumerate(words):
            chunk = ChatGenerationChunk(message=AIMessageChunk(
                content=word, additional_kwargs=reply.additional_kwargs if i == 0 else {}
            ))
            if run_manager is not None:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk

    # -- behaviour -------------------------------------------------------------------------------
    def respond(self, messages: Sequence[BaseMessage], tools: list[str]) -> AIMessage:
        start = turn_start(messages)
        request = str(messages[start - 1].content) if start > 0 else ""
        parsed = parse(request, self.resolver, _pending_before(messages, start - 1))
        if ROUTE_TOOL in tools:
            return _route(parsed)
        turn = messages[start:]
        wanted = [c for c in parsed.calls if c.tool in tools]
        made: dict[str, int] = {}
        for m in turn:
            if isinstance(m, AIMessage):
                for call in m.tool_calls:
                    made[call["name"]] = made.get(call["name"], 0) + 1
        seen: dict[str, int] = {}
        for intent in wanted:
            seen[intent.tool] = seen.get(intent.tool, 0) + 1
            if made.get(intent.tool, 0) < seen[intent.tool]:
                return AIMessage(
                    content="",
                    tool_calls=[
                        {
                            "name": intent.tool,
                            "args": dict(intent.args),
                            "id": f"call_{uuid.uuid4().hex[:24]}",
                            "type": "tool_call",
                        }
                    ],
                )
        text = _answer(turn, set(tools) | {"place_order"})
        last_agent = parsed.agents[-1] if parsed.agents else None
        if parsed.ask and last_agent is not None and set(TOOLS_OF[last_agent]) <= set(tools):
            # what the message also asked that needs details ("... and buy Apple": how much?)
            extra = {PENDING_KEY: dict(parsed.pending)} if parsed.pending else {}
            return AIMessage(content=f"{text}\n\n{parsed.ask}" if text else parsed.ask, additional_kwargs=extra)
        return AIMessage(content=text or "I have nothing to add to that.")


def _tool_names(kwargs: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in kwargs.get("tools") or []]


def _pending_before(messages: Sequence[BaseMessage], human: int) -> dict[str, str] | None:
    """The partial request the assistant's last answer before the person's message was waiting on."""
    for m in reversed(messages[:max(human, 0)]):
        if isinstance(m, AIMessage) and m.content:
            return m.additional_kwargs.get(PENDING_KEY) or None
        if isinstance(m, HumanMessage):
            return None
    return None


def _route(parsed: Parsed) -> AIMessage:
    if parsed.agents:
        return AIMessage(content="", tool_calls=[
            {"name": ROUTE_TOOL, "args": {"agents": list(parsed.agents)}, "id": f"call_{uuid.uuid4().hex[:24]}",
             "type": "tool_call"}
        ])
    extra = {PENDING_KEY: dict(parsed.pending)} if parsed.pending else {}
    return AIMessage(content=parsed.ask, additional_kwargs=extra)


def _answer(turn: Sequence[BaseMessage], tools: set[str]) -> str:
    """Words the results that came in since the last thing the assistant said (earlier ones were answered)."""
    said = max((i for i, m in enumerate(turn) if isinstance(m, AIMessage) and m.content), default=-1)
    parts = []
    for m in turn[said + 1:]:
        if isinstance(m, ToolMessage) and m.name in tools:
            try:
                result = json.loads(str(m.content))
            except json.JSONDecodeError:
                result = {"error": "the tool returned something unreadable"}
            parts.append(wording.word(m.name, result if isinstance(result, dict) else {"value": result}))
    return "\n\n".join(p for p in parts if p)
