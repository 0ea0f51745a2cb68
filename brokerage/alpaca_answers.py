"""Alpaca's answers, as alpaca-py parses them -> `brokerage.models` (amounts as exact `Decimal`s, times
as aware UTC datetimes). ACH relationships are read field by field from the raw JSON: the SDK's
status enum lacks CANCELED and CANCEL_REQUESTED (see `brokerage.alpaca_broker`)."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from alpaca.broker.models import Account, TradeAccount
from alpaca.trading.models import ClosePositionResponse, NonTradeActivity, TradeActivity
from pydantic import BaseModel

from brokerage.alpaca_errors import CENT
from brokerage.errors import Unavailable
from brokerage.models import AchRelationship, Activity, BrokerAccount, BrokerPosition, CloseResult, Order, Transfer

NEW_YORK = ZoneInfo("America/New_York")
DAY_BOOKED_AT = dt.time(16, 0)  # a date-only activity counts as of that day's close in New York


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def dec(value: Any) -> Decimal | None:
    """Alpaca's decimal strings exactly; floats (some SDK fields) via their shortest repr."""
    if value is None or value == "":
        return None
    try:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        raise Unavailable(f"Alpaca sent {value!r} where a number belongs", code="broker_protocol") from None


def dec0(value: Any) -> Decimal:
    amount = dec(value)
    return Decimal(0) if amount is None else amount


def parse_time(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = _booked(value)
    else:
        text = str(value)
        parsed = dt.datetime.fromisoformat(text) if "T" in text or " " in text else _booked(dt.date.fromisoformat(text))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _booked(day: dt.date) -> dt.datetime:
    """Alpaca books non-trade activities (deposits, dividends) by New York date: pin them inside that session."""
    return dt.datetime.combine(day, DAY_BOOKED_AT, tzinfo=NEW_YORK).astimezone(dt.UTC)


def enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def account_from(account: Account, trade: TradeAccount | None) -> BrokerAccount:
    identity, contact = account.identity, account.contact
    owner = " ".join(p for p in (identity.given_name, identity.family_name) if p) if identity else None
    money: dict[str, Any] = {}
    if trade is not None:
        money = {
            "cash": dec0(trade.cash),
            "cash_withdrawable": dec0(trade.cash_withdrawable),
            "equity": dec0(trade.equity),
            "buying_power": dec0(trade.buying_power),
            "pattern_day_trader": bool(trade.pattern_day_trader),
            "daytrade_count": trade.daytrade_count or 0,
        }
    last_equity = dec(trade.last_equity) if trade is not None else None
    if last_equity is None:
        last_equity = dec0(account.last_equity)
    created = parse_time(account.created_at)
    assert created is not None  # required by the SDK's model
    return BrokerAccount(
        id=str(account.id), account_number=account.account_number, status=enum_text(account.status),
        currency=account.currency or "USD", created_at=created,
        email=contact.email_address if contact else None, owner_name=owner or None,
        last_equity=last_equity, **money,
    )


def ach_from_model(model: BaseModel) -> AchRelationship:
    rel = ach_from_raw(dump(model))
    if rel is None:
        raise Unavailable("Alpaca answered an ACH relationship without id", code="broker_protocol")
    return rel


def ach_from_raw(item: Any) -> AchRelationship | None:
    """Field by field, any status string accepted: this is where the SDK's enum gap is closed."""
    if not isinstance(item, dict) or not item.get("id") or not item.get("created_at"):
        return None
    created = parse_time(item["created_at"])
    assert created is not None
    return AchRelationship(
        id=str(item["id"]), account_id=str(item.get("account_id") or ""), status=str(item.get("status") or "UNKNOWN"),
        account_owner_name=str(item.get("account_owner_name") or ""),
        bank_account_type=str(item.get("bank_account_type") or ""),
        bank_account_number=str(item.get("bank_account_number") or ""),
        bank_routing_number=str(item.get("bank_routing_number") or ""),
        nickname=item.get("nickname"), bank_name=item.get("bank_name"),
        created_at=created, updated_at=parse_time(item.get("updated_at")) or created,
    )


def transfer_from(d: dict[str, Any]) -> Transfer:
    created = parse_time(d["created_at"])
    assert created is not None
    return Transfer(
        id=str(d["id"]), account_id=str(d["account_id"]), relationship_id=d.get("relationship_id"),
        amount=dec0(d["amount"]), direction=str(d["direction"]), status=str(d["status"]),
        type=str(d.get("type") or "ach"), reason=d.get("reason"),
        created_at=created, updated_at=parse_time(d.get("updated_at")) or created,
    )


def order_from(d: dict[str, Any], account_id: str) -> Order:
    created = parse_time(d["created_at"])
    assert created is not None
    return Order(
        id=str(d["id"]), client_order_id=d["client_order_id"], account_id=account_id,
        symbol=d.get("symbol") or "", side=d.get("side") or "", type=d.get("type") or d.get("order_type") or "",
        time_in_force=d["time_in_force"], status=d["status"], qty=dec(d.get("qty")),
        notional=dec(d.get("notional")), limit_price=dec(d.get("limit_price")),
        filled_qty=dec0(d.get("filled_qty")), filled_avg_price=dec(d.get("filled_avg_price")),
        created_at=created, updated_at=parse_time(d.get("updated_at")) or created,
        submitted_at=parse_time(d.get("submitted_at")), filled_at=parse_time(d.get("filled_at")),
    )


def position_from(d: dict[str, Any]) -> BrokerPosition:
    return BrokerPosition(
        symbol=d["symbol"], qty=dec0(d["qty"]),
        avg_entry_price=dec0(d["avg_entry_price"]), cost_basis=dec0(d["cost_basis"]),
        current_price=dec(d.get("current_price")), market_value=dec(d.get("market_value")),
        lastday_price=dec(d.get("lastday_price")), qty_available=dec(d.get("qty_available")),
    )


def close_from(r: ClosePositionResponse) -> CloseResult:
    body = dump(r.body)
    order_id = r.order_id or body.get("id")
    return CloseResult(
        symbol=r.symbol or body.get("symbol") or "", status=r.status or 0,
        order_id=None if order_id is None else str(order_id), message=body.get("message"),
    )


def activity_from(a: TradeActivity | NonTradeActivity) -> Activity:
    d = dump(a)
    if isinstance(a, TradeActivity):
        qty, price = dec0(a.qty), dec0(a.price)
        gross = (qty * price).quantize(CENT, ROUND_HALF_UP)
        when = parse_time(a.transaction_time)
        assert when is not None
        return Activity(
            id=a.id, account_id=str(a.account_id), activity_type=enum_text(a.activity_type), date=when,
            net_amount=-gross if enum_text(a.side) == "buy" else gross, symbol=a.symbol, side=enum_text(a.side),
            qty=qty, price=price, order_id=str(a.order_id), status=enum_text(a.order_status),
        )
    when = parse_time(d["date"])
    assert when is not None
    return Activity(
        id=a.id, account_id=str(a.account_id), activity_type=enum_text(a.activity_type), date=when,
        net_amount=dec0(a.net_amount), symbol=a.symbol, qty=dec(a.qty), price=dec(a.price),
        status=None if a.status is None else enum_text(a.status), description=a.description,
    )
