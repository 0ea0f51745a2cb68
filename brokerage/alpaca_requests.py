"""Our requests -> alpaca-py's request models (an account application, an order), checked first so
that what Alpaca would refuse is refused here with our own error codes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from alpaca.broker.models import Agreement as SdkAgreement
from alpaca.broker.models import Contact as SdkContact
from alpaca.broker.models import Disclosures as SdkDisclosures
from alpaca.broker.models import Identity as SdkIdentity
from alpaca.broker.requests import CreateAccountRequest, LimitOrderRequest, MarketOrderRequest

from brokerage.alpaca_errors import check_cents
from brokerage.errors import InvalidRequest
from brokerage.models import AccountApplication, OrderRequest


def account_request(a: AccountApplication) -> CreateAccountRequest:
    return CreateAccountRequest(
        contact=SdkContact(
            email_address=a.contact.email_address, phone_number=a.contact.phone_number,
            street_address=a.contact.street_address, city=a.contact.city, state=a.contact.state,
            postal_code=a.contact.postal_code, country=a.contact.country,
        ),
        identity=SdkIdentity(
            given_name=a.identity.given_name, family_name=a.identity.family_name,
            date_of_birth=a.identity.date_of_birth.isoformat(), tax_id=a.identity.tax_id,
            tax_id_type=a.identity.tax_id_type,  # type: ignore[arg-type]  # a free string; alpaca-py's model validates it into its enum country_of_citizenship=a.identity.country_of_citizenship,
            country_of_birth=a.identity.country_of_birth,
            country_of_tax_residence=a.identity.country_of_tax_residence,
            funding_source=a.identity.funding_source,  # type: ignore[arg-type]  # a free string; alpaca-py's model validates it into its enum
        ),
        disclosures=SdkDisclosures(
            is_control_person=a.disclosures.is_control_person,
            is_affiliated_exchange_or_finra=a.disclosures.is_affiliated_exchange_or_finra,
            is_politically_exposed=a.disclosures.is_politically_exposed,
            immediate_family_exposed=a.disclosures.immediate_family_exposed,
        ),
        agreements=[
            SdkAgreement(
                agreement=g.agreement,  # type: ignore[arg-type]  # a free string; alpaca-py's model validates it into its enum
                ip_address=g.ip_address, signed_at=_rfc3339(g.signed_at),
            )
            for g in a.agreements
        ],
    )


def order_request(r: OrderRequest) -> MarketOrderRequest | LimitOrderRequest:
    if (r.qty is None) == (r.notional is None):
        raise InvalidRequest("give exactly one of qty or notional", code="invalid_order")
    if r.qty is not None and (not r.qty.is_finite() or r.qty <= 0):
        raise InvalidRequest(f"qty must be positive, not {r.qty}", code="invalid_order")
    if r.notional is not None:
        check_cents(r.notional, "notional")
        if r.type != "market":
            raise InvalidRequest("notional orders must be market orders", code="invalid_order")
    common: dict[str, Any] = {
        "symbol": r.symbol, "side": r.side, "time_in_force": r.time_in_force,
        "client_order_id": r.client_order_id or str(uuid.uuid4()),
        "qty": None if r.qty is None else float(r.qty),
        "notional": None if r.notional is None else float(r.notional),
    }
    if r.type == "limit":
        if r.limit_price is None or not r.limit_price.is_finite() or r.limit_price <= 0:
            raise InvalidRequest("a limit order needs a positive limit_price", code="invalid_order")
        return LimitOrderRequest(limit_price=float(r.limit_price), **common)
    return MarketOrderRequest(**common)


def _rfc3339(t: dt.datetime) -> str:
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
