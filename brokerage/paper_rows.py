"""Rows of the paper ledger as the brokerage models the rest of the product sees."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

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


def _columns(row: Row, *names: str) -> dict[str, Any]:
    """The columns stored under the model's own field names, as they are."""
    return {name: row[name] for name in names}


def _decimals(row: Row, *names: str) -> dict[str, Any]:
    """Amounts kept as exact decimal text; an empty column stays None."""
    return {name: decimal_or_none(row[name]) for name in names}


def _stamps(row: Row) -> dict[str, Any]:
    return {"created_at": instant(row["created_at"]), "updated_at": instant(row["updated_at"])}


def ach_relationship(row: Row) -> AchRelationship:
    return AchRelationship(
        **_columns(
            row, "id", "account_id", "status", "bank_account_type", "bank_account_number", "bank_routing_number",
            "nickname", "bank_name",
        ),
        account_owner_name=row["owner_name"],
        **_stamps(row),
    )


def transfer(row: Row) -> Transfer:
    return Transfer(
        **_columns(row, "id", "account_id", "relationship_id", "direction", "status", "reason"),
        amount=Decimal(row["amount"]),
        **_stamps(row),
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
    return Order(
        **_columns(
            row, "id", "client_order_id", "account_id", "symbol", "side", "type", "time_in_force", "status", "reason"
        ),
        **_decimals(row, "qty", "notional", "limit_price", "filled_avg_price"),
        filled_qty=Decimal(row["filled_qty"]),
        **_stamps(row),
        submitted_at=when(row["created_at"]),
        filled_at=when(row["filled_at"]),
    )
