"""Trading: place an order, list and cancel orders, read the account's activities.

`POST /api/trade` takes the frontend's names (`ticker` or `symbol`, `BUY`/`SELL`, `notional_amount`
or `notional`, or `qty`) and checks the order here with the same rules for every broker: the input
(a notional of at least $1 in whole cents, positive quantities, limit prices in valid increments),
then the pre-trade rules of `brokerage.order_rules` (a sell needs the position, an order by qty is
worth at least $1), read against the broker's position and the last price in Redis. Whether cash
suffices and the PDT rule are the broker's to enforce, and its refusals arrive as typed errors
(422 with their own code). Money and quantities answer as strings.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated, Literal, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from brokerage import order_rules
from brokerage import paper_rules as rules
from brokerage.errors import BrokerageError, InvalidRequest, Rejected
from brokerage.models import Activity, BrokerPosition, Order, OrderRequest
from engine import metrics
from engine.types import LastPrice
from gateway.auth import check_owner, services_of
from gateway.body import json_response, parse_body
from gateway.brokerage_access import Id, acting_user, broker_of, owned_account
from gateway.errors import ApiError
from gateway.openapi import ApiRoute
from gateway.services import AsyncBroker

log = logging.getLogger("clera.gateway.trading")

T = TypeVar("T")
ORDER_STATUSES = ("open", "closed", "all")


class TradeBody(msgspec.Struct, forbid_unknown_fields=False):
    """Exactly one of `notional_amount`/`notional` (dollars) or `qty` (shares); `ticker` or `symbol`."""

    accountId: Id
    side: Literal["BUY", "SELL", "buy", "sell"]
    ticker: str | None = None
    symbol: str | None = None
    notional_amount: Decimal | None = None
    notional: Decimal | None = None
    qty: Decimal | None = None
    order_type: Literal["market", "limit"] = "market"
    limit_price: Decimal | None = None
    time_in_force: Literal["day", "gtc"] = "day"
    client_order_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class OrdersResponse(msgspec.Struct):
    orders: list[Order]


class ActivitiesResponse(msgspec.Struct):
    activities: list[Activity]


def _either(first: T | None, second: T | None, names: str) -> T | None:
    """Two spellings of one field: either may be given, both only if they agree."""
    if first is not None and second is not None and first != second:
        raise InvalidRequest(f"{names} disagree; give one of them", details={"field": names})
    return first if first is not None else second


def order_request(body: TradeBody) -> OrderRequest:
    raw_symbol = _either(body.ticker.upper() if body.ticker else None, body.symbol.upper() if body.symbol else None,
                         "ticker/symbol")
    if raw_symbol is None:
        raise InvalidRequest("ticker (or symbol) is required", details={"field": "ticker"})
    notional = _either(body.notional_amount, body.notional, "notional_amount/notional")
    if (notional is None) == (body.qty is None):
        raise InvalidRequest("give exactly one of notional_amount and qty", details={"field": "notional_amount"})
    limit_price = None
    if body.order_type == "limit":
        if notional is not None:
            raise InvalidRequest("a limit order takes qty, not a notional amount", details={"field": "notional_amount"})
        if body.limit_price is None:
            raise InvalidRequest("a limit order needs limit_price", details={"field": "limit_price"})
        limit_price = rules.check_limit_price(body.limit_price)
    elif body.limit_price is not None:
        raise InvalidRequest("limit_price is only for limit orders", details={"field": "limit_price"})
    return OrderRequest(
        symbol=rules.check_symbol(raw_symbol),
        side="buy" if body.side.lower() == "buy" else "sell",
        type=body.order_type,
        qty=rules.check_qty(body.qty) if body.qty is not None else None,
        notional=rules.check_notional(notional) if notional is not None else None,
        limit_price=limit_price,
        time_in_force=body.time_in_force,
        client_order_id=body.client_order_id,
    )


async def _position(broker: AsyncBroker, account_id: str, symbol: str) -> BrokerPosition | None:
    positions: list[BrokerPosition] = await broker.list_positions(account_id)
    return next((p for p in positions if p.symbol == symbol), None)


async def _last_price(request: Request, symbol: str) -> LastPrice | None:
    try:
        return await services_of(request).portfolio.last_price(symbol)
    except msgspec.DecodeError:  # a malformed price is no price, as the paper broker reads it
        log.warning("ignoring malformed price:%s", symbol)
        return None


async def _check_pre_trade(request: Request, broker: AsyncBroker, account_id: str, order: OrderRequest) -> None:
    """`brokerage.order_rules` against the broker's position (sells only) and Redis' last price (if needed)."""
    position = await _position(broker, account_id, order.symbol) if order.side == "sell" else None
    last = await _last_price(request, order.symbol) if order_rules.needs_price(order, position) else None
    order_rules.check_order(order, position, last)


async def _placed_before(broker: AsyncBroker, account_id: str, client_order_id: str | None) -> Order | None:
    """A retry of an order that already went through (a sell that emptied the position) finds that order."""
    if client_order_id is None:
        return None
    orders: list[Order] = await broker.list_orders(account_id, "all")
    return next((o for o in orders if o.client_order_id == client_order_id), None)


def _count_order(outcome: str, reason: str) -> None:
    metrics.sink().record(metrics.ORDERS, 1, {"outcome": outcome, "path": "api", "reason": reason})


async def trade(request: Request) -> Response:
    user_id = acting_user(request)
    body = await parse_body(request, TradeBody)
    await check_owner(services_of(request), user_id, body.accountId)  # before the rules: others learn nothing
    order_req = order_request(body)
    broker = broker_of(request)
    try:
        await _check_pre_trade(request, broker, body.accountId, order_req)
    except Rejected as exc:
        existing = await _placed_before(broker, body.accountId, order_req.client_order_id)
        if existing is None:
            _count_order("rejected", exc.code)
            raise
        return json_response(existing)
    try:
        order: Order = await broker.submit_order(body.accountId, order_req)
    except BrokerageError as exc:
        _count_order("rejected", exc.code)
        raise
    _count_order("placed", "")
    log.info(
        "order %s %s %s on account %s: %s", order.id, order.side, order.symbol, body.accountId, order.status,
        extra={"account_id": body.accountId, "user_id": user_id, "order_id": order.id},
    )
    return json_response(order)


async def list_orders(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await owned_account(request, account_id)
    status = request.query_params.get("status", "all")
    if status not in ORDER_STATUSES:
        raise ApiError(422, "invalid_request", "status must be open, closed or all", {"field": "status"})
    orders: list[Order] = await broker_of(request).list_orders(account_id, status)
    return json_response(OrdersResponse(orders))


async def cancel_order(request: Request) -> Response:
    """Answers the order as it stands after the cancel (an already-filled order is a 422 `not_cancelable`)."""
    account_id, order_id = request.path_params["account_id"], request.path_params["order_id"]
    await owned_account(request, account_id)
    broker = broker_of(request)
    await broker.cancel_order(account_id, order_id)
    order: Order = await broker.get_order(account_id, order_id)
    log.info("order %s on account %s cancelled: %s", order_id, account_id, order.status,
             extra={"account_id": account_id, "order_id": order_id})
    return json_response(order)


async def list_activities(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await owned_account(request, account_id)
    activities: list[Activity] = await broker_of(request).list_activities(account_id)
    return json_response(ActivitiesResponse(activities))


def routes(_: object) -> list[BaseRoute]:
    tags = ["trading"]
    return [
        ApiRoute(
            "/api/trade", trade, methods=["POST"], auth="service_owner",
            summary="Buy or sell: market by notional ($1 minimum) or qty, or limit by qty",
            body=TradeBody, response=Order, errors=(503,), tags=tags,
        ),
        ApiRoute(
            "/api/portfolio/{account_id}/orders", list_orders, auth="service_owner",
            summary="Orders of the account (?status=open|closed|all), newest first", response=OrdersResponse,
            errors=(422, 503), tags=tags,
        ),
        ApiRoute(
            "/api/portfolio/{account_id}/orders/{order_id}", cancel_order, methods=["DELETE"],
            auth="service_owner", summary="Cancel an open order", response=Order, errors=(422, 503), tags=tags,
        ),
        ApiRoute(
            "/api/portfolio/{account_id}/activities", list_activities, auth="service_owner",
            summary="Fills and cash movements, newest first", response=ActivitiesResponse, errors=(503,), tags=tags,
        ),
    ]
