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
from brokerage.errors import BrokerageError, Conflict, NotFound
from brokerage.models import AccountApplication, AchRelationship, BrokerAccount, Transfer
from brokerage.store import EmailClaim, OnboardingStatus, check_email
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


def _email_in_use() -> ApiError:
    return ApiError(409, "email_in_use", "an account with this email address already exists")


def _created(account: BrokerAccount) -> Response:
    return json_response(
        CreateAccountResponse(
            id=account.id, account_number=account.account_number, status=account.status, created_at=account.created_at
        )
    )


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


async def create_account(request: Request) -> Response:
    """Opens an account at the broker for the signed-in user and records in the store that they own it.

    The broker and the store share no transaction, so the order of the steps is what keeps a failure
    between them recoverable instead of locking the user out:
    1. The store's account with this email answers: someone else's -> 409 `email_in_use`; the user's
       own -> that account (a retry after a lost answer). Otherwise the email is claimed for the user
       (`Store.claim_email`, atomic: one user per email); someone else's claim -> 409.
    2. The broker opens the account. If it refuses the application, a claim this request took is
       released, so a mistyped email blocks nobody.
    3. The store records the ownership; its unique index on the email has the last word.
    If step 3 fails (the store is down: 503), the broker holds an account nobody owns in the store,
    and the claim stays with the user. Their retry meets the broker's "email in use" in step 2, finds
    the account at the broker by email and attaches it to them, as nobody owns it and its owner's
    name is the application's. The claim is what makes this safe: nobody else gets past step 1 with
    that email, so an account left behind can only go to the person who applied for it.
    """
    user_id = acting_user(request)
    body = await parse_body(request, CreateAccountBody)
    if body.userId is not None and body.userId != user_id:
        raise forbidden("userId is not the signed-in user: an account can only be opened for yourself")
    store = services_of(request).store
    email = check_email(body.alpacaData.contact.email_address)
    recorded = await asyncio.to_thread(store.account_by_email, email)
    if recorded is not None and recorded.user_id != user_id:
        raise _email_in_use()
    if recorded is not None:
        return _created(await broker_of(request).get_account(recorded.account_id))
    claim = await asyncio.to_thread(store.claim_email, user_id, email)
    if claim.user_id != user_id:
        raise _email_in_use()
    account = await _open_at_broker(request, body.alpacaData, claim)
    await asyncio.to_thread(
        store.add_account,
        user_id,
        account.id,
        email=email,
        account_number=account.account_number,
        status=_ONBOARDING.get(account.status, "submitted"),
    )
    log.info("account %s opened for user %s: %s", account.id, user_id, account.status,
             extra={"account_id": account.id, "user_id": user_id})
    return _created(account)


async def _open_at_broker(request: Request, application: AccountApplication, claim: EmailClaim) -> BrokerAccount:
    """Step 2 of `create_account`: a new account, or the one an earlier attempt left without an owner."""
    broker, store = broker_of(request), services_of(request).store
    try:
        created: BrokerAccount = await broker.create_account(application)
        return created
    except Conflict:  # the broker knows the email already
        found: BrokerAccount | None = await broker.find_account_by_email(claim.email)
        owner = None if found is None else await asyncio.to_thread(store.owner_of, found.id)
        applicant = f"{application.identity.given_name} {application.identity.family_name}"
        if found is None or owner not in (None, claim.user_id) or not _same_name(found.owner_name or "", applicant):
            raise _email_in_use() from None
        log.warning("account %s had no owner in the store (an earlier attempt failed after the broker opened it):"
                    " attached to user %s, who holds the claim on its email", found.id, claim.user_id)
        return found
    except BrokerageError as refusal:
        if claim.new and refusal.status < 500:  # nothing was opened: the email is free again
            await asyncio.to_thread(store.release_email, claim.user_id, claim.email)
        raise


async def get_account(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await owned_account(request, account_id)
    account: BrokerAccount = await broker_of(request).get_account(account_id)
    await _sync_onboarding(request, account)
    return json_response(account)


async def create_transfer(request: Request) -> Response:
    user_id = acting_user(request)
    body = await parse_body(request, TransferBody)
    await check_owner(services_of(request), user_id, body.accountId)
    amount = rules.check_amount(body.amount)
    broker = broker_of(request)
    relationships: list[AchRelationship] = await broker.list_ach_relationships(body.accountId)
    if not any(r.id == body.relationshipId for r in relationships):
        raise NotFound(
            "no such ACH relationship on this account",
            code="ach_not_found",
            details={"relationshipId": body.relationshipId},
        )
    transfer: Transfer = await broker.create_transfer(body.accountId, body.relationshipId, amount, body.direction)
    log.info("transfer %s %s %s on account %s", transfer.id, transfer.direction, transfer.amount, body.accountId,
             extra={"account_id": body.accountId})
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
    transfers: list[Transfer] = await broker_of(request).list_transfers(account_id)
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
