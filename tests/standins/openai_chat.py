"""A local stand-in for an OpenAI-compatible `/v1/chat/completions` server, served over real HTTP.

The agents talk to any OpenAI-compatible endpoint through langchain-openai's `ChatOpenAI` and the
`openai` client; pointing them here tests that whole path without a model. What the "model" says is
SCRIPTED by the test: a list of replies answered in order, or a function of the request body
(`keyed_on_tools` picks a queue by the tools a request offers, so a script does not depend on the
order in which the graph happens to call its nodes). A reply is assistant text, tool calls, or both,
with the token counts to report.

It speaks OpenAI's wire format: `Authorization: Bearer` checked (401 `invalid_api_key` otherwise),
the message rules OpenAI enforces checked (a tool message answers a preceding `tool_calls`, every
tool call is answered, names and function names match OpenAI's patterns, `stream_options` only with
`stream`), errors in OpenAI's `{"error": {message, type, param, code}}` shape; a plain
`chat.completion` JSON answer, or with `stream: true` SSE `chat.completion.chunk`s: the role first,
text in pieces, each tool call as deltas (index, id, type and name first, then its arguments split
over several chunks), the finish reason, a usage chunk with empty `choices` when
`stream_options.include_usage` is set, then `data: [DONE]`.

Every request body received is kept in `requests` (rejected ones too), the reply served for each
accepted one in `served`, and every refusal in `errors`, so a test can assert the tools offered and
the messages sent.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from standins.served import ThreadedServer

FINGERPRINT = "fp_standin"
# OpenAI's patterns: a message's `name`, and a function's name (also what a tool call may name).
MESSAGE_NAME = re.compile(r"^[^\s<|\\/>]+$")
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
TEXT_PIECE = 4  # characters of text per streamed chunk, so a reply always arrives in several pieces
ARGUMENT_PIECES = 3  # chunks each tool call's arguments are split over


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any] | str  # a string is sent as is (e.g. to send malformed JSON)

    @property
    def json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    """One assistant turn: `content` and/or `tool_calls`, with the usage the server reports for it."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 20
    completion_tokens: int = 5

    @property
    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            },
        }

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def say(text: str, *, prompt_tokens: int = 20, completion_tokens: int = 5) -> Reply:
    return Reply(content=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def call(name: str, arguments: Mapping[str, Any] | str, *, prompt_tokens: int = 20,
         completion_tokens: int = 5) -> Reply:
    return Reply(tool_calls=(ToolCall(name, arguments),), prompt_tokens=prompt_tokens,
                 completion_tokens=completion_tokens)


Script = Sequence[Reply] | Callable[[dict[str, Any]], Reply]


class ScriptExhausted(Exception):
    """The test scripted no reply for this request: answered as a 400 so the client does not retry."""


def offered_tools(body: Mapping[str, Any]) -> list[str]:
    """Names of the functions a request offers the model, in the order it lists them."""
    return [t["function"]["name"] for t in body.get("tools") or []]


def keyed_on_tools(queues: Mapping[str, Sequence[Reply]]) -> Callable[[dict[str, Any]], Reply]:
    """A script answering each request from the queue of the first key that names a tool it offers, each
    queue in order: which node the graph calls (the tools it offers) decides the queue, not the call order."""
    pending = {key: list(replies) for key, replies in queues.items()}

    def answer(body: dict[str, Any]) -> Reply:
        tools = offered_tools(body)
        key = next((k for k in pending if k in tools), None)
        if key is None:
            raise ScriptExhausted(f"no script for a request offering tools {tools}")
        if not pending[key]:
            raise ScriptExhausted(f"the script for {key} is used up (tools offered: {tools})")
        return pending[key].pop(0)

    return answer


class OpenAIError(Exception):
    """A refusal in OpenAI's shape, which the openai client turns into its typed errors (401, 400)."""

    def __init__(self, status: int, message: str, code: str | None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": str(self), "type": "invalid_request_error", "param": self.param, "code": self.code}},
            status_code=self.status,
        )


class OpenAIChatStandin:
    """`with OpenAIChatStandin("sk-test", script) as llm:` then point a client at `llm.url + "/v1"`.

    `script` may be replaced between turns (`llm.script = [...]`)."""

    def __init__(self, api_key: str, script: Script = ()) -> None:
        self.api_key = api_key
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.served: list[Reply] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.url = ""

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> OpenAIChatStandin:
        app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        self._served = ThreadedServer(app, "OpenAI")
        self.url = self._served.url
        return self

    def __exit__(self, *exc: object) -> None:
        self._served.stop()

    # --- HTTP ---------------------------------------------------------------------------------
    async def _completions(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse(OpenAIError(400, "We could not parse the JSON body of your request.", None))
        with self._lock:
            self.requests.append(body)
        try:
            self._authenticate(request)
            _validate(body)
            reply = self._next_reply(body)
        except OpenAIError as exc:
            return self._refuse(exc)
        completion_id = f"chatcmpl-standin{next(self._ids)}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _sse(_chunks(completion_id, body["model"], reply, include_usage)), media_type="text/event-stream"
            )
        return JSONResponse(_completion(completion_id, body["model"], reply))

    def _refuse(self, exc: OpenAIError) -> Response:
        with self._lock:
            self.errors.append(f"{exc.status} {exc.code}: {exc}")
        return exc.response()

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise OpenAIError(401, "You didn't provide an API key. You need to provide your API key in an "
                              "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                              None)
        if header.removeprefix("Bearer ") != self.api_key:
            raise OpenAIError(401, "Incorrect API key provided.", "invalid_api_key")

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        """The scripted reply, chosen and recorded under the lock so concurrent requests take distinct ones."""
        with self._lock:
            try:
                if callable(self.script):
                    reply = self.script(body)
                elif len(self.served) < len(self.script):
                    reply = self.script[len(self.served)]
                else:
                    raise ScriptExhausted(f"the script has {len(self.script)} replies, all served")
            except ScriptExhausted as exc:
                raise OpenAIError(400, f"stand-in: {exc}", "standin_script_exhausted") from None
            self.served.append(reply)
            return reply


def _validate(body: Any) -> None:
    """The request rules OpenAI enforces that an agent could break: what would be a 400 there is one here."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "The request body must be a JSON object.", None)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise OpenAIError(400, "you must provide a model parameter", None, "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                          "empty_array", "messages")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise OpenAIError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                          None, "stream_options")
    for i, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            raise OpenAIError(400, f"Invalid 'tools[{i}].function.name': string does not match pattern.",
                              "invalid_value", f"tools[{i}].function.name")
    unanswered: list[str] = []
    for i, message in enumerate(messages):
        _validate_message(i, message, unanswered)
    if unanswered:
        raise _unanswered(unanswered)


def _validate_message(i: int, message: Any, unanswered: list[str]) -> None:
    """One message in order; `unanswered` holds the tool call ids the tool messages so far still owe."""
    where = f"messages[{i}]"
    role = message.get("role") if isinstance(message, dict) else None
    if role not in ROLES:
        raise OpenAIError(400, f"Invalid value for '{where}.role'.", "invalid_value", f"{where}.role")
    name = message.get("name")
    if name is not None and not (isinstance(name, str) and MESSAGE_NAME.match(name)):
        raise OpenAIError(400, f"Invalid '{where}.name': string does not match pattern. Expected a string that "
                          r"matches the pattern '^[^\s<|\\/>]+$'.", "invalid_value", f"{where}.name")
    if role == "tool":
        if message.get("tool_call_id") not in unanswered:
            raise OpenAIError(400, "Invalid parameter: messages with role 'tool' must be a response to a "
                              "preceeding message with 'tool_calls'.", None, f"{where}.role")
        unanswered.remove(message["tool_call_id"])
        return
    if unanswered:
        raise _unanswered(unanswered)
    calls = message.get("tool_calls") if role == "assistant" else None
    if role == "assistant" and calls:
        for call_ in calls:
            function = call_.get("function") or {}
            if call_.get("type") != "function" or not call_.get("id") or not isinstance(function.get("arguments"), str):
                raise OpenAIError(400, f"Invalid '{where}.tool_calls': each needs id, type 'function' and "
                                  "function.arguments as a string.", "invalid_value", f"{where}.tool_calls")
        unanswered.extend(c["id"] for c in calls)
    elif message.get("content") is None:
        raise OpenAIError(400, f"Invalid value for '{where}.content': expected a string, got null.",
                          "invalid_type", f"{where}.content")


def _unanswered(ids: list[str]) -> OpenAIError:
    return OpenAIError(400, "An assistant message with 'tool_calls' must be followed by tool messages responding "
                       f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                       f"{', '.join(ids)}", None, "messages")


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _completion(completion_id: str, model: str, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None, "annotations": []}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": _call_id(), "type": "function", "function": {"name": c.name, "arguments": c.json}}
            for c in reply.tool_calls
        ]
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": reply.usage, "service_tier": "default", "system_fingerprint": FINGERPRINT,
    }


def _chunks(completion_id: str, model: str, reply: Reply, include_usage: bool) -> list[dict[str, Any]]:
    """The reply as OpenAI streams it: every chunk carries `usage: null` when usage comes at the end."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            out["usage"] = None
        return out

    text = reply.content or ""
    chunks = [chunk({"role": "assistant", "content": "" if text or not reply.tool_calls else None, "refusal": None})]
    chunks += [chunk({"content": text[i:i + TEXT_PIECE]}) for i in range(0, len(text), TEXT_PIECE)]
    for index, tool_call in enumerate(reply.tool_calls):
        chunks.append(chunk({"tool_calls": [{
            "index": index, "id": _call_id(), "type": "function",
            "function": {"name": tool_call.name, "arguments": ""},
        }]}))
        arguments = tool_call.json
        size = -(-len(arguments) // ARGUMENT_PIECES) or 1
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i:i + size]}}]})
            for i in range(0, len(arguments), size)
        ]
    chunks.append(chunk({}, reply.finish_reason))
    if include_usage:
        chunks.append({
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": FINGERPRINT, "choices": [], "usage": reply.usage,
        })
    return chunks


async def _sse(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
