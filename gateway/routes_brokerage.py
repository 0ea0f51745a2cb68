"""Brokerage routes: open an account, read its balances, move money by ACH; mounts bank links and trading.

Request and response shapes follow the seed's "API Routes" (camelCase bodies, snake_case answers,
money as strings). Every route is a service call (`X-API-Key`) made on behalf of a person (their
JWT), and a route that names an account needs that person to own it; the new account of
`/create-alpaca-account` belongs to the JWT's user, recorded in the store. Amounts arrive as JSON
numbers or strings, are parsed exactly into Decimal and must be positive whole cents.

`routes` also returns the routes of `gateway.routes_ach` and `gateway.routes_trading`, so the
gateway's one `routes_brokerage` provider mounts the whole feature.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from decimal import Decimal
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from brokerage import paper_rules as rules
from brokerage.errors import NotFound
from brokerage.models import AccountApplication, AchRelationship, BrokerAccount, Transfer
from brokerage.store import OnboardingStatus, normalize_email
from gateway import routes_ach, routes_trading
from gateway.auth import check_owner, services_of
from gateway.body import json_response, parse_body
from gateway.brokerage_access import Id, acting_user, broker_of, owned_account
from gateway.errors import ApiError, forbidden
from gateway.openapi import ApiRoute

log = logging.getLogger("clera.gateway.brokerage")

# The store keeps the onboarding part of the broker's account status. Closure states belong to the
# closure process, so an account in them is never moved from here.
_ONBOARDING: dict[str, OnboardingStatus] = {"APPROVED": "approved", "ACTIVE": "active", "REJECTED": "rejected"}
_SYNCED = frozenset({"submitted", "approved", "active", "rejected"})


class CreateAccountBody(msgspec.Struct, forbid_unknown_fields=False):
    """`userId` is optional; when given it must be the signed-in user's id."""

    alpacaData: AccountApplication
    userId: Id | None = None


class CreateAccountResponse(msgspec.Struct):
    id: str
    account_number: str
    status: str
    created_at: dt.datetime


class TransferBody(msgspec.Struct, forbid_unknown_fields=False):
    accountId: Id
    relationshipId: Id
    amount: Decimal
    direction: Literal["INCOMING", "OUTGOING"]


class TransferResponse(msgspec.Struct):
    id: str
    status: str
    amount: Decimal
    direction: str
    created_at: dt.datetime


class TransfersResponse(msgspec.Struct):
    transfers: list[Transfer]


async def _sync_onboarding(request: Request, account: BrokerAccount) -> None:
    """Brings the store's onboarding status up to the broker's (approval happens at the broker)."""
    store = services_of(request).store
    wanted = _ONBOARDING.get(account.status)
    if wanted is None:
        return
    record = await asyncio.to_thread(store.get_account, account.id)
    if record is not None and record.status in _SYNCED and record.status != wanted:
        await asyncio.to_thread(store.set_account_status, account.id, wanted)


async def create_account(request: Request) -> Response:
    user_id = acting_user(request)
    body = await parse_body(request, CreateAccountBody)
    if body.userId is not None and body.userId != user_id:
        raise forbidden("userId is not the signed-in user: an account can only be opened for yourself")
    store = services_of(request).store
    email = normalize_email(body.alpacaData.contact.email_address) or ""
    if await asyncio.to_thread(store.account_by_email, email) is not None:
        raise ApiError(409, "email_in_use", "an account with this email address already exists")
    account: BrokerAccount = await broker_of(request).call("create_account", body.alpacaData)
    await asyncio.to_thread(
        store.add_account,
        user_id,
        account.id,
        email=email,
        account_number=account.account_number,
        status=_ONBOARDING.get(account.status, "submitted"),
    )
    log.info("account %s opened for user %s: %s", account.id, user_id, account.status)
    return json_response(
        CreateAccountResponse(
            id=account.id, account_number=account.account_number, status=account.status, created_at=account.created_at
        )
    )


async def get_account(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await owned_account(request, account_id)
    account: BrokerAccount = await broker_of(request).call("get_account", account_id)
    await _sync_onboarding(request, account)
    return json_response(account)


async def create_transfer(request: Request) -> Response:
    user_id = acting_user(request)
    body = await parse_body(request, TransferBody)
    amount = rules.check_amount(body.amount)
    await check_owner(services_of(request), user_id, body.accountId)
    broker = broker_of(request)
    relationships: list[AchRelationship] = await broker.call("list_ach_relationships", body.accountId)
    if not any(r.id == body.relationshipId for r in relationships):
        raise NotFound(
            "no such ACH relationship on this account",
            code="ach_not_found",
            details={"relationshipId": body.relationshipId},
        )
    transfer: Transfer = await broker.call(
        "create_transfer", body.accountId, body.relationshipId, amount, body.direction
    )
    log.info("transfer %s %s %s on account %s", transfer.id, transfer.direction, transfer.amount, body.accountId)
    return json_response(
        TransferResponse(
            id=transfer.id,
            status=transfer.status,
            amount=transfer.amount,
            direction=transfer.direction,
            created_at=transfer.created_at,
        )
    )


async def list_transfers(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await owned_account(request, account_id)
    transfers: list[Transfer] = await broker_of(request).call("list_transfers", account_id)
    return json_response(TransfersResponse(transfers))


def routes(services: object) -> list[BaseRoute]:
    tags = ["accounts"]
    own = [
        ApiRoute(
            "/create-alpaca-account", create_account, methods=["POST"], auth="service_user",
            summary="Open a brokerage account for the signed-in user", body=CreateAccountBody,
            response=CreateAccountResponse, errors=(403, 409, 503), tags=tags,
        ),
        ApiRoute(
            "/api/account/{account_id}", get_account, auth="service_owner",
            summary="Balances, status, buying power, withdrawable cash, PDT flag and day-trade count",
            response=BrokerAccount, errors=(503,), tags=tags,
        ),
        ApiRoute(
            "/initiate-ach-transfer", create_transfer, methods=["POST"], auth="service_owner",
            summary="Deposit (INCOMING) or withdraw (OUTGOING) by ACH", body=TransferBody,
            response=TransferResponse, errors=(409, 503), tags=tags,
        ),
        ApiRoute(
            "/api/account/{account_id}/transfers", list_transfers, auth="service_owner",
            summary="ACH transfers of the account, newest first", response=TransfersResponse, errors=(503,),
            tags=tags,
        ),
    ]
    return own + routes_ach.routes(services) + routes_trading.routes(services)
