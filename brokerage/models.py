"""Brokerage domain types shared by every Broker implementation and the gateway routes.

Amounts are Decimal and travel as strings (as Alpaca sends them). Field names follow Alpaca's
Broker API so the Alpaca adapter maps one to one and the frontend sees familiar shapes.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

AccountStatus = Literal[
    "SUBMITTED", "APPROVAL_PENDING", "APPROVED", "ACTIVE", "REJECTED", "ACTION_REQUIRED", "DISABLED",
    "ACCOUNT_CLOSED",
]
TransferStatus = Literal[
    "QUEUED", "APPROVAL_PENDING", "PENDING", "SENT_TO_CLEARING", "APPROVED", "COMPLETE", "REJECTED",
    "CANCELED", "RETURNED",
]
AchStatus = Literal["QUEUED", "APPROVED", "PENDING", "CANCELED", "CANCEL_REQUESTED"]
Direction = Literal["INCOMING", "OUTGOING"]
Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]
TimeInForce = Literal["day", "gtc"]
OrderStatus = Literal[
    "new", "accepted", "pending_new", "partially_filled", "filled", "canceled", "expired", "rejected",
    "pending_cancel", "replaced", "done_for_day",
]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


# --- account application (validated input) ---------------------------------------------------
# A moment as the wire carries it (RFC 3339); msgspec's own schema for datetime says only "string".
Timestamp = Annotated[dt.datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class Contact(msgspec.Struct, forbid_unknown_fields=False):
    email_address: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    phone_number: NonEmpty
    street_address: Annotated[list[NonEmpty], msgspec.Meta(min_length=1)]
    city: NonEmpty
    postal_code: NonEmpty
    state: str | None = None
    country: str | None = "USA"


# A name must have a character that is not a space (the application check strips it).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"\S")]


class Identity(msgspec.Struct, forbid_unknown_fields=False):
    given_name: Name
    family_name: Name
    date_of_birth: dt.date
    country_of_tax_residence: NonEmpty
    funding_source: Annotated[list[NonEmpty], msgspec.Meta(min_length=1)]
    tax_id: str | None = None
    tax_id_type: str | None = None
    country_of_citizenship: str | None = None
    country_of_birth: str | None = None


class Disclosures(msgspec.Struct, forbid_unknown_fields=False):
    is_control_person: bool
    is_affiliated_exchange_or_finra: bool
    is_politically_exposed: bool
    immediate_family_exposed: bool


class Agreement(msgspec.Struct, forbid_unknown_fields=False):
    agreement: NonEmpty
    signed_at: Timestamp
    ip_address: NonEmpty


class AccountApplication(msgspec.Struct, forbid_unknown_fields=False):
    contact: Contact
    identity: Identity
    disclosures: Disclosures
    agreements: Annotated[
        list[Agreement],
        msgspec.Meta(
            min_length=1,
            extra_json_schema={"contains": {"properties": {"agreement": {"const": "customer_agreement"}}}},
        ),
    ]


# --- broker state -----------------------------------------------------------------------------
class BrokerAccount(msgspec.Struct, kw_only=True):
    id: str
    account_number: str
    status: str
    currency: str = "USD"
    created_at: dt.datetime
    email: str | None = None
    owner_name: str | None = None
    cash: Decimal = Decimal(0)
    cash_withdrawable: Decimal = Decimal(0)
    equity: Decimal = Decimal(0)
    last_equity: Decimal = Decimal(0)
    buying_power: Decimal = Decimal(0)
    pattern_day_trader: bool = False
    daytrade_count: int = 0


class AchRelationship(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    status: str
    account_owner_name: str
    bank_account_type: str
    bank_account_number: str
    bank_routing_number: str
    nickname: str | None = None
    bank_name: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class ManualAchRequest(msgspec.Struct, kw_only=True):
    bank_account_type: Literal["CHECKING", "SAVINGS"]
    bank_account_number: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4,17}$")]
    bank_routing_number: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{9}$")]
    nickname: str | None = None


class Transfer(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    relationship_id: str | None
    amount: Decimal
    direction: str
    status: str
    type: str = "ach"
    reason: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class OrderRequest(msgspec.Struct, kw_only=True):
    """Exactly one of qty / notional; notional only for market orders. `client_order_id` makes it idempotent."""

    symbol: str
    side: Side
    type: OrderType = "market"
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = "day"
    client_order_id: str | None = None


class Order(msgspec.Struct, kw_only=True):
    id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    status: str
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    reason: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    submitted_at: dt.datetime | None = None
    filled_at: dt.datetime | None = None


class BrokerPosition(msgspec.Struct, kw_only=True):
    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    cost_basis: Decimal
    current_price: Decimal | None = None
    market_value: Decimal | None = None
    lastday_price: Decimal | None = None
    qty_available: Decimal | None = None


class Activity(msgspec.Struct, kw_only=True):
    """A fill (`FILL`) or a transfer (`CSD` cash deposit / `CSW` cash withdrawal), as Alpaca names them."""

    id: str
    account_id: str
    activity_type: str
    date: dt.datetime
    net_amount: Decimal
    symbol: str | None = None
    side: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    order_id: str | None = None
    status: str | None = None
    description: str | None = None


class CloseResult(msgspec.Struct, kw_only=True):
    """One line of a close-all answer (Alpaca's 207 multi-status)."""

    symbol: str
    status: int
    order_id: str | None = None
    message: str | None = None
