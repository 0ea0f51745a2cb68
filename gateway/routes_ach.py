"""Bank links: manual ACH relationships, Plaid Link (link URL, public-token exchange) and Plaid's webhook.

Routing numbers are checked against the ABA checksum here, whichever broker is configured, so a
typo is a 422 before anything reaches a bank. The owner name on a relationship comes from the
account's identity at the broker, never from the request. Plaid is built on first use per app;
unconfigured, its routes answer 503 and manual links keep working.

A link made through Plaid is recorded in the store with its Plaid Item; Plaid's webhooks about that
Item are recorded on it, and one saying the user must go through Link again shows as `needs_relink`
on the relationship until Plaid says the login was repaired (or the bank is linked again).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Annotated, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from brokerage.aba import is_valid_routing_number
from brokerage.errors import BrokerageError
from brokerage.models import AchRelationship, ManualAchRequest
from brokerage.plaid_events import parse_webhook
from brokerage.plaid_link import PlaidLink
from brokerage.store import BankLink
from gateway.auth import check_owner, services_of
from gateway.body import json_response, parse_body
from gateway.brokerage_access import BlockingBroker, Id, acting_user, broker_of, owned_account, query_param
from gateway.errors import ApiError
from gateway.openapi import ID_QUERY, ApiRoute

log = logging.getLogger("clera.gateway.ach")

INACTIVE_ACH = frozenset({"CANCELED", "CANCEL_REQUESTED"})


class ManualAchBody(msgspec.Struct, forbid_unknown_fields=False):
    accountId: Id
    bankAccountNumber: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4,17}$")]
    bankRoutingNumber: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{9}$")]
    bankAccountType: Literal["CHECKING", "SAVINGS"] = "CHECKING"
    nickname: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class ManualAchResponse(msgspec.Struct):
    id: str
    status: str
    created_at: dt.datetime


class AchView(msgspec.Struct):
    """A bank link as the frontend shows it: the last four digits, never the full account number;
    `needs_relink` while Plaid says the user must go through Link again for it."""

    id: str
    status: str
    bank_name: str | None
    bank_account_type: str
    last_4: str
    nickname: str | None
    created_at: dt.datetime
    needs_relink: bool = False


class AchListResponse(msgspec.Struct):
    relationships: list[AchView]


class DeletedResponse(msgspec.Struct):
    id: str
    deleted: bool


class AchLinkBody(msgspec.Struct, forbid_unknown_fields=False):
    accountId: Id
    redirectUri: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None


class AchLinkResponse(msgspec.Struct):
    link_url: str
    link_token: str


class ExchangeTokenBody(msgspec.Struct, forbid_unknown_fields=False):
    """`plaidAccountId` may be left out when Link did not say (Hosted Link): the Item's checking account is used."""

    accountId: Id
    publicToken: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    plaidAccountId: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None


class WebhookAck(msgspec.Struct):
    """`bank_links`: how many bank links the webhook was recorded on (0 for an Item no link knows)."""

    received: bool
    webhook_type: str
    webhook_code: str
    needs_relink: bool
    bank_links: int


def ach_view(rel: AchRelationship, link: BankLink | None = None) -> AchView:
    return AchView(
        id=rel.id,
        status=rel.status,
        bank_name=rel.bank_name,
        bank_account_type=rel.bank_account_type,
        last_4=rel.bank_account_number[-4:],
        nickname=rel.nickname,
        created_at=rel.created_at,
        needs_relink=link is not None and link.needs_relink,
    )


def _plaid(request: Request) -> PlaidLink:
    """One PlaidLink per app, built on first use; unconfigured Plaid raises Unavailable (503) each time."""
    link: PlaidLink | None = getattr(request.app.state, "plaid_link", None)
    if link is None:
        link = PlaidLink(services_of(request).settings)
        request.app.state.plaid_link = link
    return link


async def create_manual_ach(request: Request) -> Response:
    user_id = acting_user(request)
    body = await parse_body(request, ManualAchBody)
    await check_owner(services_of(request), user_id, body.accountId)
    if not is_valid_routing_number(body.bankRoutingNumber):
        raise ApiError(
            422, "invalid_routing_number", f"routing number {body.bankRoutingNumber} fails the ABA checksum",
            {"field": "bankRoutingNumber"},
        )
    bank = ManualAchRequest(
        bank_account_type=body.bankAccountType,
        bank_account_number=body.bankAccountNumber,
        bank_routing_number=body.bankRoutingNumber,
        nickname=body.nickname,
    )
    rel: AchRelationship = await broker_of(request).create_ach_relationship(body.accountId, bank)
    log.info("manual bank link %s on account %s", rel.id, body.accountId, extra={"account_id": body.accountId})
    return json_response(ManualAchResponse(id=rel.id, status=rel.status, created_at=rel.created_at))


async def list_ach(request: Request) -> Response:
    """Active links only: a deleted link (CANCELED / CANCEL_REQUESTED) can no longer move money."""
    user_id = acting_user(request)
    account_id = query_param(request, "accountId")
    store = services_of(request).store
    await check_owner(services_of(request), user_id, account_id)
    rels: list[AchRelationship] = await broker_of(request).list_ach_relationships(account_id)
    links = {link.relationship_id: link for link in await asyncio.to_thread(store.bank_links_of, account_id)}
    return json_response(
        AchListResponse([ach_view(r, links.get(r.id)) for r in rels if r.status not in INACTIVE_ACH])
    )


async def delete_ach(request: Request) -> Response:
    account_id, rel_id = request.path_params["account_id"], request.path_params["relationship_id"]
    await owned_account(request, account_id)
    await broker_of(request).delete_ach_relationship(account_id, rel_id)
    log.info("bank link %s of account %s deleted", rel_id, account_id, extra={"account_id": account_id})
    return json_response(DeletedResponse(id=rel_id, deleted=True))


async def create_link(request: Request) -> Response:
    user_id = acting_user(request)
    body = await parse_body(request, AchLinkBody)
    await check_owner(services_of(request), user_id, body.accountId)
    link_token, url = await asyncio.to_thread(_plaid(request).create_link_token, user_id, body.redirectUri)
    return json_response(AchLinkResponse(link_url=url, link_token=link_token))


async def exchange_token(request: Request) -> Response:
    user_id = acting_user(request)
    body = await parse_body(request, ExchangeTokenBody)
    await check_owner(services_of(request), user_id, body.accountId)
    plaid, broker = _plaid(request), broker_of(request)
    blocking = BlockingBroker(broker, asyncio.get_running_loop())
    linked = await asyncio.to_thread(plaid.link_bank, blocking, body.accountId, body.publicToken, body.plaidAccountId)
    rel = linked.relationship
    log.info("bank linked through Plaid on account %s: relationship %s", body.accountId, rel.id,
             extra={"account_id": body.accountId})
    try:
        link = await asyncio.to_thread(
            services_of(request).store.record_bank_link, body.accountId, rel.id, linked.item_id
        )
    except BrokerageError:  # the bank is linked and moves money; only Plaid's later notices would be missed
        log.exception("bank link %s of account %s not recorded with its Plaid Item", rel.id, body.accountId,
                      extra={"account_id": body.accountId})
        link = None
    return json_response(ach_view(rel, link))


async def plaid_webhook(request: Request) -> Response:
    """Plaid's signature is the credential here (no API key, no JWT): unverifiable -> 401."""
    raw = await request.body()
    plaid = _plaid(request)
    payload = await asyncio.to_thread(plaid.verify_webhook, raw, request.headers)
    event = parse_webhook(payload)
    links: list[BankLink] = []
    if event.item_id is not None:
        store = services_of(request).store
        links = await asyncio.to_thread(store.record_item_event, event.item_id, event.summary, event.relink_state)
    relationships = [link.relationship_id for link in links]
    if event.needs_relink:
        log.warning(
            "plaid webhook %s: item %s needs the user to relink (bank links %s)",
            event.summary, event.item_id, relationships,
        )
    elif event.item_id is not None and not links:
        log.info("plaid webhook %s for item %s, which no bank link knows: ignored", event.summary, event.item_id)
    else:
        log.info("plaid webhook %s item=%s bank links %s", event.summary, event.item_id, relationships)
    return json_response(
        WebhookAck(
            received=True, webhook_type=event.webhook_type, webhook_code=event.webhook_code,
            needs_relink=event.needs_relink, bank_links=len(links),
        )
    )


def routes(_: object) -> list[BaseRoute]:
    tags = ["bank links"]
    return [
        ApiRoute(
            "/create-ach-relationship-manual", create_manual_ach, methods=["POST"], auth="service_owner",
            summary="Link a bank by account and routing number (owner name from the account's identity)",
            body=ManualAchBody, response=ManualAchResponse, errors=(409, 503), tags=tags,
        ),
        ApiRoute(
            "/get-ach-relationships", list_ach, auth="service_owner",
            summary="Active bank links of ?accountId= (needs_relink: Plaid asks the user to link again)",
            response=AchListResponse, errors=(422, 503), tags=tags,
            query={"accountId": ID_QUERY},
        ),
        ApiRoute(
            "/ach-relationships/{account_id}/{relationship_id}", delete_ach, methods=["DELETE"],
            auth="service_owner", summary="Remove a bank link", response=DeletedResponse, errors=(503,), tags=tags,
        ),
        ApiRoute(
            "/create-ach-relationship-link", create_link, methods=["POST"], auth="service_owner",
            summary="Plaid Link URL and token for linking a bank", body=AchLinkBody, response=AchLinkResponse,
            errors=(503,), tags=tags,
        ),
        ApiRoute(
            "/exchange-plaid-token", exchange_token, methods=["POST"], auth="service_owner",
            summary="Turn Link's public token into a bank link on the account", body=ExchangeTokenBody,
            response=AchView, errors=(409, 503), tags=tags,
        ),
        ApiRoute(
            "/plaid/webhook", plaid_webhook, methods=["POST"], auth="none",
            summary="Plaid webhooks, verified by Plaid's Plaid-Verification signature", response=WebhookAck,
            errors=(401, 422, 503), tags=tags,
        ),
    ]
