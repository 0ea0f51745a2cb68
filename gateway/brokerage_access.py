"""What every brokerage route does first: find the broker, authenticate the acting person, check ownership.

Brokerage routes are service calls (`X-API-Key`) made on behalf of a person (their JWT); a route
that names an account also needs that person to own it (404 unknown, 403 someone else's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request

from brokerage.models import AchRelationship, BrokerAccount
from gateway.auth import check_owner, require_api_key, require_user, services_of
from gateway.errors import ApiError, unavailable
from gateway.services import AsyncBroker

T = TypeVar("T")
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


def broker_of(request: Request) -> AsyncBroker:
    broker = services_of(request).broker
    if broker is None:
        raise unavailable("no broker is configured on this gateway")
    return broker


def acting_user(request: Request) -> str:
    """The API key first, then the person's JWT."""
    require_api_key(request)
    return require_user(request)


async def owned_account(request: Request, account_id: str) -> str:
    """The acting user, once `account_id` is known to be theirs."""
    user_id = acting_user(request)
    await check_owner(services_of(request), user_id, account_id)
    return user_id


def query_param(request: Request, name: str) -> str:
    value = request.query_params.get(name, "").strip()
    if not value:
        raise ApiError(422, "invalid_request", f"query parameter {name} is required", {"field": name})
    return value


class BlockingBroker:
    """The synchronous face of an AsyncBroker that linking a bank needs (PlaidLink.link_bank runs in a
    worker thread): each call is scheduled on the gateway's event loop and waited for from the thread,
    so the chain runs the same way whatever executes the broker (a thread pool under uvicorn, Ray
    tasks in Serve)."""

    def __init__(self, broker: AsyncBroker, loop: asyncio.AbstractEventLoop) -> None:
        self._broker = broker
        self._loop = loop

    def _wait(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def get_account(self, account_id: str) -> BrokerAccount:
        return self._wait(self._broker.get_account(account_id))

    def create_ach_relationship_from_processor_token(self, account_id: str, processor_token: str) -> AchRelationship:
        return self._wait(self._broker.create_ach_relationship_from_processor_token(account_id, processor_token))
