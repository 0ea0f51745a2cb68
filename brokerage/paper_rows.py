"""Rows of the paper ledger as the brokerage models the rest of the product sees."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec

from brokerage.models import (
    AccountApplication,
    AchRelationship,
    Activity,
    Order,
    Transfer,
)
from brokerage.sql import Row

UTC = dt.UTC


def instant(value: float) -> dt.datetime:
    """Unix seconds as stored -> aware UTC datetime."""
    return dt.datetime.fromtimestamp(float(value), UTC)


def when(value: float | None) -> dt.datetime | None:
    """A column that may be empty (a fill time, a completion time)."""
    return None if value is None else instant(value)


def decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def masked_application(app: AccountApplication) -> AccountApplication:
    """What the ledger keeps of an application: the tax id only as its last four characters."""
    tax_id = app.identity.tax_id
    if tax_id:
        identity = msgspec.structs.replace(app.identity, tax_id="***" + tax_id[-4:])
        return msgspec.structs.replace(app, identity=identity)
    return app


def ach_relationship(row: Row) -> AchRelationship:
    return AchRelationship(
        id=row["id"],
        account_id=row["account_id"],
        status=row["status"],
        account_owner_name=row["owner_name"],
        bank_account_type=row["bank_account_type"],
        bank_account_number=row["bank_account_number"],
        bank_routing_number=row["bank_routing_number"],
        nickname=row["nickname"],
        bank_name=row["bank_name"],
        created_at=instant(row["created_at"]),
        updated_at=instant(row["updated_at"]),
    )


def transfer(row: Row) -> Transfer:
    return Transfer(
        id=row["id"],
        account_id=row["account_id"],
        relationship_id=row["relationship_id"],
        amount=Decimal(row["amount"]),
        direction=row["direction"],
        status=row["status"],
        reason=row["reason"],
        created_at=instant(row["created_at"]),
        updated_at=instant(row["updated_at"]),
    )


def transfer_activity(row: Row, kind: str, net: Decimal, at: float, description: str) -> Activity:
    return Activity(
        id=row["id"],
        account_id=row["account_id"],
        activity_type=kind,
        date=instant(at),
        net_amount=net,
        status=row["status"],
        description=description,
    )


def fill_activity(row: Row) -> Activity:
    return Activity(
        id=row["id"],
        account_id=row["account_id"],
        activity_type="FILL",
        date=instant(row["filled_at"]),
        net_amount=Decimal(row["amount"]) * (-1 if row["side"] == "buy" else 1),
        symbol=row["symbol"],
        side=row["side"],
        qty=Decimal(row["qty"]),
        price=Decimal(row["price"]),
        order_id=row["order_id"],
        status="filled",
    )


def order(row: Row) -> Order:
    filled_qty = Decimal(row["filled_qty"])
    return Order(
        id=row["id"],
        client_order_id=row["client_order_id"],
        account_id=row["account_id"],
        symbol=row["symbol"],
        side=row["side"],
        type=row["type"],
        time_in_force=row["time_in_force"],
        status=row["status"],
        qty=decimal_or_none(row["qty"]),
        notional=decimal_or_none(row["notional"]),
        limit_price=decimal_or_none(row["limit_price"]),
        filled_qty=filled_qty,
        filled_avg_price=decimal_or_none(row["filled_avg_price"]),
        reason=row["reason"],
        created_at=instant(row["created_at"]),
        updated_at=instant(row["updated_at"]),
        submitted_at=when(row["created_at"]),
        filled_at=when(row["filled_at"]),
    )
