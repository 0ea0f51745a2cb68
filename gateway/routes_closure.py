"""Account closure routes: readiness, initiate, the steps one by one, progress, resume, cancel, status.

The seed's routes, each under `/account-closure/...` and `/api/account-closure/...` (the existing
frontend calls both). Every route is a service call (`X-API-Key`) made for a person (their JWT) who
must own the account (403 otherwise, whether it exists or not). The work is the closure process's
(`brokerage.closure.process.ClosureProcess`, reached through `Services.closure`); its typed errors
become the one error shape (404 no closure, 409 cancel after liquidation, 422 "$X remaining").
Money answers as decimal strings.

`POST initiate` needs `ach_relationship_id` and both confirmations, literally `true`. The other POST
routes take no fields; an empty body or any JSON object is accepted (the seed's clients send `{}`
or their old request bodies).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gateway.auth import services_of
from gateway.body import json_response, parse_body
from gateway.brokerage_access import Id, owned_account
from gateway.errors import ApiError, unavailable
from gateway.openapi import ApiRoute
from gateway.services import ClosureRunner

log = logging.getLogger("clera.gateway.closure")

PREFIXES = ("/account-closure", "/api/account-closure")


class InitiateBody(msgspec.Struct, forbid_unknown_fields=False):
    """Both confirmations must be `true`: the closure sells everything and cannot be undone."""

    ach_relationship_id: Id
    confirm_liquidation: bool
    confirm_irreversible: bool


# --- documented answers (the routes answer the process's dicts as they are) ---------------------
class ReadinessResponse(msgspec.Struct):
    ready: bool
    reason: str
    details: dict[str, Any]


class InitiateResponse(msgspec.Struct):
    success: bool
    step: str
    message: str
    confirmation_code: str


class StepResponse(msgspec.Struct):
    success: bool
    step: str
    message: str


class SettlementResponse(msgspec.Struct):
    settled: bool
    details: dict[str, Any]


class WithdrawResponse(msgspec.Struct):
    success: bool
    transfer_id: str
    amount: str


class MessageResponse(msgspec.Struct):
    success: bool
    message: str


class HistoryItem(msgspec.Struct):
    step: str
    at: dt.datetime
    message: str


class ProgressResponse(msgspec.Struct):
    """`step_number`: 0 initiated, 1 canceling orders / liquidating, 2 waiting settlement, 3 withdrawing,
    4 closing, 5 completed, -1 failed, of `total_steps` 5. `withdrawn`: completed withdrawals so far."""

    account_id: str
    step: str
    step_number: int
    total_steps: int
    step_name: str
    history: list[HistoryItem]
    confirmation_code: str
    initiated_at: dt.datetime
    completed_at: dt.datetime | None
    failure_reason: str | None
    withdrawn: str


class TransferStatusResponse(msgspec.Struct):
    transfer_id: str
    status: str
    amount: str
    complete: bool
    reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ClosureTransferItem(msgspec.Struct):
    id: str
    amount: str
    status: str
    created_at: dt.datetime
    attempt: int


class StatusResponse(msgspec.Struct):
    """The closure record, the store's status of the account and the last lines of its log."""

    account_id: str
    user_id: str
    step: str
    step_number: int
    total_steps: int
    step_name: str
    confirmation_code: str
    account_status: str | None
    initiated_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None
    failure_reason: str | None
    liquidation_sent_at: dt.datetime | None
    transfers: list[ClosureTransferItem]
    withdrawn: str
    rejected_transfers: int
    log: list[str]


def runner_of(request: Request) -> ClosureRunner:
    runner = services_of(request).closure
    if runner is None:
        raise unavailable("account closure is not running on this gateway")
    return runner


async def _no_fields(request: Request) -> None:
    """An optional body: nothing, or a JSON object (whose fields are ignored)."""
    if (await request.body()).strip():
        await parse_body(request, dict[str, Any])


Call = Callable[[ClosureRunner, str, Request], Awaitable[Any]]


def _step(call: Call, *, post: bool = False, note: str = "") -> Callable[[Request], Awaitable[Response]]:
    """A route that checks the caller owns the account, takes an optional empty body when it is a POST,
    and answers the runner's result; `note` is logged with the account id."""

    async def endpoint(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        await owned_account(request, account_id)
        if post:
            await _no_fields(request)
        result = await call(runner_of(request), account_id, request)
        if note:
            log.info(note, account_id, extra={"account_id": account_id})
        return json_response(result)

    return endpoint


async def initiate(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    user_id = await owned_account(request, account_id)
    body = await parse_body(request, InitiateBody)
    for field in ("confirm_liquidation", "confirm_irreversible"):
        if getattr(body, field) is not True:
            raise ApiError(
                422, "confirmation_required",
                f"{field} must be true: closing sells every position and cannot be undone", {"field": field},
            )
    result = await runner_of(request).initiate(account_id, user_id, body.ach_relationship_id)
    log.info("closure of account %s initiated by %s: %s", account_id, user_id, result.get("step"),
             extra={"account_id": account_id, "user_id": user_id, "step": result.get("step")})
    return json_response(result)


check_readiness = _step(lambda runner, account, _: runner.readiness(account))
settlement_status = _step(lambda runner, account, _: runner.settlement_status(account))
withdraw_funds = _step(lambda runner, account, _: runner.withdraw_funds(account), post=True)
withdrawal_status = _step(
    lambda runner, account, request: runner.withdrawal_status(account, request.path_params["transfer_id"])
)
close_account = _step(lambda runner, account, _: runner.close_account(account), post=True, note="account %s closed")
progress = _step(lambda runner, account, _: runner.progress(account))
resume = _step(lambda runner, account, _: runner.resume(account), post=True)
cancel = _step(lambda runner, account, _: runner.cancel(account), post=True, note="closure of account %s canceled")
status = _step(lambda runner, account, _: runner.status(account))


# (path, endpoint, method, summary, body, response, errors beyond auth)
_ROUTES: tuple[tuple[str, Any, str, str, Any, Any, tuple[int, ...]], ...] = (
    ("/check-readiness/{account_id}", check_readiness, "GET",
     "Whether the account can be closed: active, a bank to withdraw to, no closure running",
     None, ReadinessResponse, (503,)),
    ("/initiate/{account_id}", initiate, "POST",
     "Start the closure: cancel every order and sell every position, then settle, withdraw and close",
     InitiateBody, InitiateResponse, (409, 422, 503)),
    ("/settlement-status/{account_id}", settlement_status, "GET",
     "Whether the sales have settled (T+1) and the cash can be withdrawn", None, SettlementResponse, (503,)),
    ("/withdraw-funds/{account_id}", withdraw_funds, "POST",
     "Send the withdrawable cash to the closure's bank (at most the daily ACH limit a day)",
     None, WithdrawResponse, (409, 422, 503)),
    ("/withdrawal-status/{account_id}/{transfer_id}", withdrawal_status, "GET",
     "A closure withdrawal's status", None, TransferStatusResponse, (503,)),
    ("/close-account/{account_id}", close_account, "POST",
     "Close the account for good: no positions, no open orders, cash at most $1.00",
     None, MessageResponse, (409, 422, 503)),
    ("/progress/{account_id}", progress, "GET",
     "The closure's step (number of 5), its history, confirmation code and start", None, ProgressResponse, (503,)),
    ("/resume/{account_id}", resume, "POST",
     "Run the closure's next step now (the orchestrator does this on its own too)", None, StepResponse,
     (409, 422, 503)),
    ("/cancel/{account_id}", cancel, "POST",
     "Cancel the closure; only before its liquidation was sent (409 after)", None, MessageResponse, (409, 503)),
    ("/status/{account_id}", status, "GET",
     "The closure record: step, transfers, confirmation code, times, failure reason, last log lines",
     None, StatusResponse, (503,)),
)


def routes(_: object) -> list[BaseRoute]:
    tags = ["account closure"]
    return [
        ApiRoute(
            prefix + path, endpoint, methods=[method], auth="service_owner", summary=summary, body=body,
            response=response, errors=errors, tags=tags,
        )
        for prefix in PREFIXES
        for path, endpoint, method, summary, body, response, errors in _ROUTES
    ]
