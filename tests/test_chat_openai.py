"""The OpenAI-compatible model path (CLERA_LLM=openai) wires tools and confirmations like the offline model.

The model is langchain-openai's real `ChatOpenAI`, built by the project's own factory
(`agents.llm.chat_model`), talking HTTP to a local OpenAI-compatible stand-in whose replies the test
scripts. The scripts are keyed on the tools each request offers (the supervisor is offered `route`,
each agent its own tools), so they follow the graph rather than assume its call order; the requests
the stand-in recorded show what the agents actually sent and offered.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from agent_support import SYMBOLS, AgentWorld, agent_world, real_close
from gateway_support import ALICE, make_settings
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI
from standins.openai_chat import (
    OpenAIChatStandin,
    Reply,
    Script,
    ToolCall,
    call,
    keyed_on_tools,
    offered_tools,
    say,
)

from agents.catalogue import ANALYST_TOOLS, TRADE_TOOLS
from agents.llm import chat_model
from agents.symbols import default_resolver
from agents.tools.registry import REGISTRY

API_KEY = "sk-standin-0123456789"
MODEL = "clera-standin-model"
QUOTE_TEXT = "Apple (AAPL) last traded at the replayed price; this is not live data."


@pytest.fixture
def llm() -> Iterator[OpenAIChatStandin]:
    with OpenAIChatStandin(API_KEY) as standin:
        yield standin


@contextlib.asynccontextmanager
async def openai_world(
    tmp_path: Path, redis_url: str, llm: OpenAIChatStandin, script: Script
) -> AsyncIterator[AgentWorld]:
    """The agent world on the model `chat_model` builds for CLERA_LLM=openai, pointed at the stand-in."""
    llm.script = script
    env = {"CLERA_LLM": "openai", "CLERA_LLM_BASE_URL": llm.url + "/v1", "CLERA_LLM_MODEL": MODEL,
           "OPENAI_API_KEY": API_KEY}
    model = chat_model(make_settings(redis_url, tmp_path, **env), default_resolver(SYMBOLS))
    assert isinstance(model, ChatOpenAI)
    async with agent_world(tmp_path, redis_url, model=model, **env) as world:
        yield world
    assert llm.errors == []


def route_to(*agents: str) -> Reply:
    return call("route", {"agents": list(agents)}, prompt_tokens=50, completion_tokens=7)


def quote_script() -> Script:
    return keyed_on_tools({
        "route": [route_to("financial_analyst")],
        "get_quote": [call("get_quote", {"symbol": "AAPL"}, prompt_tokens=80, completion_tokens=9),
                      say(QUOTE_TEXT, prompt_tokens=120, completion_tokens=30)],
    })


def quoted_price() -> Decimal:
    return Decimal(repr(real_close("AAPL")[0])).quantize(Decimal("0.0001"))


# --- ChatOpenAI against the stand-in -----------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
async def test_chat_openai_gets_real_tool_calls_and_usage(llm: OpenAIChatStandin, streamed: bool) -> None:
    llm.script = [Reply(
        tool_calls=(ToolCall("get_quote", {"symbol": "AAPL"}), ToolCall("company_profile", {"symbol": "Microsoft"})),
        prompt_tokens=33, completion_tokens=12,
    )]
    model = ChatOpenAI(base_url=llm.url + "/v1", api_key=API_KEY, model=MODEL, stream_usage=True, max_retries=0)
    bound = model.bind_tools([REGISTRY["get_quote"].schema, REGISTRY["company_profile"].schema])
    question = [HumanMessage("quote Apple and tell me about Microsoft")]
    if streamed:
        chunks = [chunk async for chunk in bound.astream(question)]
        assert len(chunks) > 4  # the arguments really arrived in pieces
        reply: Any = sum(chunks[1:], chunks[0])
        assert isinstance(reply, AIMessageChunk)
    else:
        reply = await bound.ainvoke(question)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("get_quote", {"symbol": "AAPL"}), ("company_profile", {"symbol": "Microsoft"}),
    ]
    assert all(c["id"].startswith("call_") for c in reply.tool_calls) and not reply.invalid_tool_calls
    assert reply.usage_metadata is not None
    assert (reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"],
            reply.usage_metadata["total_tokens"]) == (33, 12, 45)

    (body,) = llm.requests
    assert body["model"] == MODEL and offered_tools(body) == ["get_quote", "company_profile"]
    assert body["tools"][0]["function"]["parameters"]["required"] == ["symbol"]
    assert bool(body.get("stream")) is streamed
    assert (body.get("stream_options") or {}).get("include_usage", False) is streamed


async def test_a_wrong_key_is_refused_like_openai_does(llm: OpenAIChatStandin) -> None:
    llm.script = [say("never sent")]
    model = ChatOpenAI(base_url=llm.url + "/v1", api_key="sk-wrong", model=MODEL, max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        await model.ainvoke("hello")
    assert llm.served == [] and len(llm.errors) == 1


async def test_the_standin_refuses_histories_openai_refuses(llm: OpenAIChatStandin) -> None:
    """The graph tests rely on this: a message shape OpenAI answers with a 400 fails here too."""
    llm.script = [say("never sent")]
    client = openai.AsyncOpenAI(base_url=llm.url + "/v1", api_key=API_KEY, max_retries=0)
    asked = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_quote", "arguments": "{}"}}]}
    with pytest.raises(openai.BadRequestError, match="did not have response messages: call_1"):
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}, asked])
    with pytest.raises(openai.BadRequestError, match="must be a response to a preceeding message"):
        await client.chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_1", "content": "{}"}])
    await client.close()
    assert llm.served == [] and len(llm.errors) == 2


# --- the agent graph through the gateway ---------------------------------------------------------------
async def test_a_quote_through_the_graph(tmp_path: Path, redis_url: str, llm: OpenAIChatStandin) -> None:
    async with openai_world(tmp_path, redis_url, llm, quote_script()) as w:
        turn = await w.ok(await w.chat(ALICE, "What's Apple trading at?"))
    assert turn["agent"] == "financial_analyst" and turn["reply"] == QUOTE_TEXT and turn["interrupt"] is None
    (step,) = turn["steps"]
    assert (step["agent"], step["tool"], step["args"]) == ("financial_analyst", "get_quote", {"symbol": "AAPL"})
    assert isinstance(step["result"].get("price"), str), step["result"]
    assert Decimal(step["result"]["price"]) == quoted_price()

    supervisor, first, second = llm.requests
    assert offered_tools(supervisor) == ["route"] and offered_tools(first) == offered_tools(second)
    assert not any(body.get("stream") for body in llm.requests)  # /api/chat does not stream the model
    assert supervisor["messages"][-1] == {"role": "user", "content": "What's Apple trading at?"}
    # the analyst is called again with its call and the tool's answer, in OpenAI's shapes
    asked, answered = second["messages"][-2:]
    (sent_call,) = asked["tool_calls"]
    assert asked["role"] == "assistant" and asked["name"] == "financial_analyst"
    assert sent_call["function"]["name"] == "get_quote" and json.loads(sent_call["function"]["arguments"]) == {
        "symbol": "AAPL"}
    assert answered["role"] == "tool" and answered["tool_call_id"] == sent_call["id"]
    assert json.loads(answered["content"]) == step["result"]


async def test_turn_usage_counts_every_model_call(tmp_path: Path, redis_url: str, llm: OpenAIChatStandin) -> None:
    async with openai_world(tmp_path, redis_url, llm, quote_script()) as w:
        turn = await w.ok(await w.chat(ALICE, "What's Apple trading at?"))
    prompt = sum(r.prompt_tokens for r in llm.served)
    completion = sum(r.completion_tokens for r in llm.served)
    assert len(llm.served) == 3
    assert turn["usage"] == {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}


async def test_a_buy_waits_for_confirm_then_places_once(tmp_path: Path, redis_url: str, llm: OpenAIChatStandin) -> None:
    placed_text = "Your order for $250.00 of AAPL was placed."
    script = keyed_on_tools({
        "route": [route_to("trade_execution")],
        "buy": [call("buy", {"symbol": "AAPL", "notional": "250"}), say(placed_text)],
    })
    async with openai_world(tmp_path, redis_url, llm, script) as w:
        account = w.accounts[ALICE]
        before = len(w.broker.list_orders(account, "all"))
        turn = await w.ok(await w.chat(ALICE, "buy $250 of Apple"))
        interrupt = turn["interrupt"]
        assert turn["agent"] == "trade_execution" and interrupt is not None
        assert interrupt["order"]["symbol"] == "AAPL" and interrupt["order"]["side"] == "buy"
        assert interrupt["order"]["notional"] == "250.00" and interrupt["order"]["account_id"] == account
        assert [s["tool"] for s in turn["steps"]] == ["buy"]
        assert len(w.broker.list_orders(account, "all")) == before  # nothing placed before the confirm
        assert len(llm.requests) == 2  # the graph stopped at the confirmation: no model call after `buy`

        confirmed = await w.ok(await w.resume(ALICE, turn["threadId"], interrupt["id"], "confirm"))
        assert confirmed["interrupt"] is None and confirmed["reply"] == placed_text
        assert confirmed["agent"] == "trade_execution"
        orders = w.broker.list_orders(account, "all")
        assert len(orders) == before + 1
        (order,) = [o for o in orders if o.client_order_id == f"clera-{interrupt['id']}"]
        assert order.symbol == "AAPL" and order.side == "buy" and order.notional == Decimal("250.00")

    # after the confirm the trade agent was called again, with the placement as a call and its answer
    after = llm.requests[-1]
    assert offered_tools(after) == list(TRADE_TOOLS)
    asked, answered = after["messages"][-2:]
    assert asked["tool_calls"][0]["function"]["name"] == "place_order"
    assert answered["role"] == "tool" and json.loads(answered["content"])["status"] == "placed"


async def test_a_new_message_drops_the_waiting_order_and_sends_the_history_openai_accepts(
    tmp_path: Path, redis_url: str, llm: OpenAIChatStandin
) -> None:
    script = keyed_on_tools({
        "route": [route_to("trade_execution"), route_to("financial_analyst", "portfolio_management")],
        "buy": [call("buy", {"symbol": "AAPL", "notional": "250"})],
        "get_quote": [call("get_quote", {"symbol": "IBM"}), say("IBM's quote.")],
        "get_portfolio": [call("get_portfolio", {}), say("Your portfolio.")],
    })
    async with openai_world(tmp_path, redis_url, llm, script) as w:
        account = w.accounts[ALICE]
        before = len(w.broker.list_orders(account, "all"))
        first = await w.ok(await w.chat(ALICE, "buy $250 of Apple"))
        assert first["interrupt"] is not None
        turn = await w.ok(await w.chat(ALICE, "no wait, quote IBM and show my portfolio", thread=first["threadId"]))
        dropped, *answers = turn["reply"].split("\n\n")
        assert "dropped" in dropped and "nothing was placed" in dropped  # the turn says the order is gone
        assert answers == ["IBM's quote.", "Your portfolio."] and turn["interrupt"] is None
        assert [(s["agent"], s["tool"]) for s in turn["steps"]] == [
            ("financial_analyst", "get_quote"), ("portfolio_management", "get_portfolio")]
        assert len(w.broker.list_orders(account, "all")) == before
    # the last request carries both turns: the dropped order's call, its answer and the note that it was dropped
    roles = [m["role"] for m in llm.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user",
                     "assistant", "tool", "assistant", "assistant", "tool"]


async def test_the_analyst_cannot_buy_whatever_the_model_says(
    tmp_path: Path, redis_url: str, llm: OpenAIChatStandin
) -> None:
    script = keyed_on_tools({
        "route": [route_to("financial_analyst")],
        "get_quote": [call("buy", {"symbol": "AAPL", "notional": "250"}), say("I can't place orders.")],
    })
    async with openai_world(tmp_path, redis_url, llm, script) as w:
        account = w.accounts[ALICE]
        before = len(w.broker.list_orders(account, "all"))
        turn = await w.ok(await w.chat(ALICE, "What's Apple trading at?"))
        assert turn["interrupt"] is None and turn["agent"] == "financial_analyst"
        (step,) = turn["steps"]
        assert step["tool"] == "buy" and step["agent"] == "financial_analyst"
        assert step["result"] == {"error": "buy is not a tool of the financial_analyst agent; it was not run"}
        assert len(w.broker.list_orders(account, "all")) == before

    supervisor, *analyst = llm.requests
    assert offered_tools(supervisor) == ["route"]
    assert len(analyst) == 2
    for body in analyst:
        assert offered_tools(body) == list(ANALYST_TOOLS)
        assert not {"buy", "sell"} & set(offered_tools(body))


async def test_the_stream_carries_the_model_tokens_steps_and_done(
    tmp_path: Path, redis_url: str, llm: OpenAIChatStandin
) -> None:
    async with openai_world(tmp_path, redis_url, llm, quote_script()) as w:
        body = {"message": "What's Apple trading at?", "accountId": w.accounts[ALICE]}
        events: list[tuple[str, Any]] = []
        async with w.http.stream("POST", "/api/chat/stream", json=body, headers=w.headers(ALICE)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((event, json.loads(line.removeprefix("data: "))))
    tokens = [data for kind, data in events if kind == "token"]
    assert len(tokens) > 1 and "".join(t["text"] for t in tokens) == QUOTE_TEXT
    assert {t["agent"] for t in tokens} == {"financial_analyst"}
    steps = [data for kind, data in events if kind == "step"]
    assert [s["tool"] for s in steps] == ["get_quote"] and Decimal(steps[0]["result"]["price"]) == quoted_price()
    kind, done = events[-1]
    assert kind == "done" and done["reply"] == QUOTE_TEXT and done["steps"] == steps
    assert done["agent"] == "financial_analyst" and done["interrupt"] is None
    # the streamed usage chunks reached the turn: at least the analyst's two calls (80+120 in, 9+30 out)
    assert done["usage"]["input_tokens"] >= 200 and done["usage"]["output_tokens"] >= 39
    assert len(llm.requests) == 3
    assert all(r.get("stream") and r["stream_options"] == {"include_usage": True} for r in llm.requests)
