"""The exported graph as LangGraph tooling loads it, and the rules the graph enforces whatever the model says.

A scripted chat model (LangChain's own fake, replaying tool calls) plays a model that misbehaves: an
analyst asking for `buy`, a trade agent calling a tool twice in one message. The graph must refuse
what the agent does not hold and never place an order without a resume that confirms.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx
import openai
from agent_support import agent_world
from gateway_support import ALICE
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph_cli.config import validate_config_file

from agents.catalogue import AGENTS, ORDER_TOOLS, TOOLS_OF
from agents.tools.registry import REGISTRY

ROOT = Path(__file__).resolve().parent.parent


def test_langgraph_json_loads_and_its_graph_compiles() -> None:
    config = validate_config_file(ROOT / "langgraph.json")
    path, _, name = config["graphs"]["agent"].partition(":")
    spec = importlib.util.spec_from_file_location("exported_graph", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as the LangGraph server loads a graph file
    spec.loader.exec_module(module)
    graph = getattr(module, name)
    assert isinstance(graph, CompiledStateGraph) and graph.checkpointer is None  # the server brings its own
    assert {"supervisor", "tools", "confirm", *AGENTS} <= set(graph.get_graph().nodes)
    assert isinstance(module.build().compile(checkpointer=InMemorySaver()), CompiledStateGraph)


def test_only_the_trade_agent_holds_order_tools() -> None:
    for agent, tools in TOOLS_OF.items():
        held = set(tools) & ORDER_TOOLS
        assert held == (ORDER_TOOLS if agent == "trade_execution" else set()), agent
        assert all(REGISTRY[t].agent == agent for t in tools)
    assert set(REGISTRY) == {t for tools in TOOLS_OF.values() for t in tools}


def _call(name: str, args: dict[str, str], n: int = 0) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"c{n}-{name}", "type": "tool_call"}])


def scripted(*replies: AIMessage) -> GenericFakeChatModel:
    """Replies in order, whatever it is asked; `bind_tools` is ignored as a scripted model would."""

    class Scripted(GenericFakeChatModel):
        def bind_tools(self, tools, **kwargs):
            return self

    return Scripted(messages=iter(replies))


async def test_an_analyst_asking_for_an_order_tool_is_refused(tmp_path: Path, redis_url: str) -> None:
    model = scripted(
        _call("route", {"agents": ["financial_analyst"]}),
        _call("buy", {"symbol": "AAPL", "qty": "1000"}),
        AIMessage(content="Done."),
    )
    async with agent_world(tmp_path, redis_url, model=model) as w:
        before = len(w.broker.list_orders(w.accounts[ALICE], "all"))
        turn = await w.ok(await w.chat(ALICE, "tell me about Apple"))
        assert turn["interrupt"] is None
        assert turn["steps"] == [{
            "agent": "financial_analyst", "tool": "buy", "args": {"symbol": "AAPL", "qty": "1000"},
            "result": {"error": "buy is not a tool of the financial_analyst agent; it was not run"},
        }]
        assert len(w.broker.list_orders(w.accounts[ALICE], "all")) == before


async def test_a_model_cannot_place_by_calling_place_order_itself(tmp_path: Path, redis_url: str) -> None:
    order = {"symbol": "AAPL", "side": "buy", "notional": "100.00", "account_id": "x"}
    model = scripted(
        _call("route", {"agents": ["trade_execution"]}),
        _call("place_order", order),
        AIMessage(content="Placed!"),
    )
    async with agent_world(tmp_path, redis_url, model=model) as w:
        before = len(w.broker.list_orders(w.accounts[ALICE], "all"))
        turn = await w.ok(await w.chat(ALICE, "buy $100 of AAPL"))
        assert turn["interrupt"] is None and "not a tool of the trade_execution agent" in json.dumps(turn["steps"])
        assert len(w.broker.list_orders(w.accounts[ALICE], "all")) == before


async def test_two_orders_in_one_message_show_only_the_first(tmp_path: Path, redis_url: str) -> None:
    both = AIMessage(content="", tool_calls=[
        {"name": "buy", "args": {"symbol": "AAPL", "notional": "100"}, "id": "c1", "type": "tool_call"},
        {"name": "buy", "args": {"symbol": "MSFT", "notional": "100"}, "id": "c2", "type": "tool_call"},
    ])
    model = scripted(_call("route", {"agents": ["trade_execution"]}), both, AIMessage(content="Placed."))
    async with agent_world(tmp_path, redis_url, model=model) as w:
        turn = await w.ok(await w.chat(ALICE, "buy $100 of AAPL and $100 of MSFT"))
        assert turn["interrupt"]["order"]["symbol"] == "AAPL"
        assert turn["steps"][1]["result"] == {"error": "one order at a time: confirm or cancel the order shown first"}
        done = await w.ok(await w.resume(ALICE, turn["threadId"], turn["interrupt"]["id"], "confirm"))
        placed = [s for s in done["steps"] if s["tool"] == "place_order"]
        assert len(placed) == 1 and placed[0]["result"]["order"]["symbol"] == "AAPL"
        assert placed[0]["args"] == turn["interrupt"]["order"]  # the order shown is the order placed


class Failing(GenericFakeChatModel):
    """Scripted replies, then the error a model server that went away raises."""

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, *args, **kwargs):
        try:
            return super()._generate(*args, **kwargs)
        except StopIteration:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1")) from None


async def test_a_model_that_fails_is_a_503_and_a_stream_ends_with_an_error_event(
    tmp_path: Path, redis_url: str
) -> None:
    model = Failing(disable_streaming=True, messages=iter([
        _call("route", {"agents": ["financial_analyst"]}),
        _call("get_quote", {"symbol": "AAPL"}),
    ]))
    async with agent_world(tmp_path, redis_url, model=model) as w:
        body = {"message": "price of Apple", "accountId": w.accounts[ALICE]}
        async with w.http.stream("POST", "/api/chat/stream", json=body, headers=w.headers(ALICE)) as response:
            text = (await response.aread()).decode()
        assert response.status_code == 200
        blocks = text.strip().split("\n\n")
        assert blocks[0].startswith("event: step") and blocks[-1].startswith("event: error")
        error = json.loads(blocks[-1].split("data: ", 1)[1])["error"]
        assert error["code"] == "model_unavailable" and set(error) == {"code", "message", "details"}

        failed = await w.chat(ALICE, "price of Apple")
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "model_unavailable"
