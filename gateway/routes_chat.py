"""The chat API: a turn, a confirmation, the same turn as Server-Sent Events, and the person's threads.

Every route is a service call made for a person (API key and their JWT). A new turn names an
account, which must be theirs; a thread must be theirs too (the runner answers 403 for a thread
that is not, or that does not exist, as for an account). An order is only ever placed by
`/api/chat/resume` with `decision: "confirm"`, never by a message.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from brokerage.errors import BrokerageError
from engine import metrics
from engine.auth import AuthError
from engine.chat import (
    MAX_MESSAGE_CHARS,
    ChatEvent,
    ChatRunner,
    ChatTurn,
    Decision,
    OrderEdit,
    ThreadDetail,
    ThreadsResponse,
)
from engine.wire import json_encoder
from gateway.auth import check_owner, services_of
from gateway.body import json_response, parse_body
from gateway.brokerage_access import Id, acting_user, query_param
from gateway.errors import ApiError, ErrorBody, unavailable
from gateway.openapi import ID_QUERY, ApiRoute

log = logging.getLogger("clera.gateway.chat")

Message = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_CHARS)]


class ChatBody(msgspec.Struct, forbid_unknown_fields=False):
    message: Message
    accountId: Id
    threadId: Id | None = None


class ResumeBody(msgspec.Struct, forbid_unknown_fields=False):
    threadId: Id
    interruptId: Id
    decision: Decision
    edit: OrderEdit | None = None


def runner_of(request: Request) -> ChatRunner:
    runner = services_of(request).chat
    if runner is None:
        raise unavailable("the agents are not running on this gateway")
    return runner


async def _chat_request(request: Request) -> tuple[str, ChatBody]:
    user_id = acting_user(request)
    body = await parse_body(request, ChatBody)
    await check_owner(services_of(request), user_id, body.accountId)
    return user_id, body


def _count_turn(route: str, outcome: str, began: float) -> None:
    """A turn's count (by outcome) and duration, for the dashboard."""
    sink = metrics.sink()
    sink.record(metrics.CHAT_TURNS, 1, {"route": route, "outcome": outcome})
    sink.record(metrics.CHAT_LATENCY_MS, (time.perf_counter() - began) * 1000, {"route": route})


@contextlib.contextmanager
def _metered(route: str) -> Iterator[None]:
    began, outcome = time.perf_counter(), "error"
    try:
        yield
        outcome = "ok"
    finally:
        _count_turn(route, outcome, began)


async def chat(request: Request) -> Response:
    user_id, body = await _chat_request(request)
    with _metered("chat"):
        turn = await runner_of(request).chat(user_id, body.accountId, body.threadId, body.message)
    return json_response(turn)


async def resume(request: Request) -> Response:
    user_id = acting_user(request)
    body = await parse_body(request, ResumeBody)
    with _metered("resume"):
        turn = await runner_of(request).resume(user_id, body.threadId, body.interruptId, body.decision, body.edit)
    for step in turn.steps:
        if step.tool == "place_order":
            log.info("chat order on thread %s: %s", body.threadId, (step.result or {}).get("status"),
                     extra={"thread_id": body.threadId, "user_id": user_id})
    return json_response(turn)


def sse(event: ChatEvent) -> bytes:
    return b"event: " + event.event.encode() + b"\ndata: " + json_encoder.encode(event.data) + b"\n\n"


def _error_event(exc: Exception) -> ChatEvent:
    if isinstance(exc, (ApiError, BrokerageError)):
        body = ErrorBody(code=exc.code, message=exc.message, details=exc.details)
    elif isinstance(exc, AuthError):
        body = ErrorBody(code=exc.code, message=exc.message)
    else:
        log.error("chat stream failed", exc_info=exc)
        body = ErrorBody(code="internal_error", message="the turn failed; nothing was placed")
    return ChatEvent(event="error", data={"error": body})


async def stream(request: Request) -> Response:
    """The first event is awaited before answering, so a refused turn is a plain error response."""
    user_id, body = await _chat_request(request)
    began = time.perf_counter()
    events = runner_of(request).stream(user_id, body.accountId, body.threadId, body.message)
    first = await anext(aiter(events))

    async def frames() -> AsyncIterator[bytes]:
        yield sse(first)
        outcome = "ok"
        try:
            async for event in events:
                yield sse(event)
        except Exception as exc:  # noqa: BLE001 - the status line is sent: the failure becomes the stream's last event
            outcome = "error"
            yield sse(_error_event(exc))
        finally:
            _count_turn("stream", outcome, began)

    return StreamingResponse(
        frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def list_threads(request: Request) -> Response:
    user_id = acting_user(request)
    account_id = query_param(request, "accountId")
    await check_owner(services_of(request), user_id, account_id)
    return json_response(ThreadsResponse(threads=await runner_of(request).threads(user_id, account_id)))


async def get_thread(request: Request) -> Response:
    user_id = acting_user(request)
    return json_response(await runner_of(request).thread(user_id, request.path_params["thread_id"]))


def routes(_: Any) -> list[BaseRoute]:
    tags = ["chat"]
    return [
        ApiRoute(
            "/api/chat", chat, methods=["POST"], auth="service_owner",
            summary="One turn with the assistant on one of the person's accounts (a new thread without threadId)",
            body=ChatBody, response=ChatTurn, errors=(409, 503), tags=tags,
        ),
        ApiRoute(
            "/api/chat/resume", resume, methods=["POST"], auth="service_owner",
            summary="Answer a trade confirmation: confirm (places the order), edit (checked and shown again) or cancel",
            body=ResumeBody, response=ChatTurn, errors=(409, 503), tags=tags,
        ),
        ApiRoute(
            "/api/chat/stream", stream, methods=["POST"], auth="service_owner",
            summary="The same turn as Server-Sent Events: token, step, interrupt, done, error",
            body=ChatBody, errors=(409, 503), tags=tags,
        ),
        ApiRoute(
            "/api/chat/threads", list_threads, auth="service_owner",
            summary="The person's conversations on an account (?accountId=), most recent first",
            response=ThreadsResponse, errors=(422, 503), tags=tags, query={"accountId": ID_QUERY},
        ),
        ApiRoute(
            "/api/chat/threads/{thread_id}", get_thread, auth="service_owner",
            summary="A conversation's messages and the confirmation it waits for, if any",
            response=ThreadDetail, errors=(503,), tags=tags,
        ),
    ]
