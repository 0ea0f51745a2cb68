"""Helpers shared by the paper broker tests: real Redis prices, a real database, a manual clock."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import msgspec
import redis

from brokerage.models import AccountApplication, ManualAchRequest
from brokerage.paper import PaperBroker
from brokerage.paper_session import OnChange
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from engine.clock import ManualClock
from engine.config import load_settings
from engine.types import LastPrice

UTC = dt.UTC
# Mon 2025-01-13 .. Fri 2025-01-17 are trading days; Mon 2025-01-20 is Martin Luther King Jr. Day.
MON_MORNING = dt.datetime(2025, 1, 13, 15, 0, tzinfo=UTC)  # 10:00 New York, market open
TUE_MORNING = dt.datetime(2025, 1, 14, 15, 0, tzinfo=UTC)


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'ledger.db'}"


def set_price(redis_url: str, symbol: str, last: float, prev_close: float | None = None) -> None:
    client = redis.Redis.from_url(redis_url)
    price = LastPrice(symbol, last, prev_close if prev_close is not None else last, 0.0, "2025-01-13", "replay")
    client.set(f"price:{symbol}", msgspec.json.encode(price))
    client.close()


def make_broker(
    db_url: str, clock: ManualClock, redis_url: str, on_change: OnChange | None = None, **env: str
) -> PaperBroker:
    settings = load_settings(env, env_file=None)
    return PaperBroker(Database(db_url), clock, RedisPriceReader(redis_url), settings=settings, on_change=on_change)


def application(email: str = "ada@example.com", **identity: object) -> AccountApplication:
    raw = {
        "contact": {
            "email_address": email,
            "phone_number": "555-555-5555",
            "street_address": ["123 Main St"],
            "city": "San Francisco",
            "state": "CA",
            "postal_code": "94105",
        },
        "identity": {
            "given_name": "Ada",
            "family_name": "Lovelace",
            "date_of_birth": "1990-01-01",
            "tax_id": "123-45-6789",
            "tax_id_type": "USA_SSN",
            "country_of_tax_residence": "USA",
            "funding_source": ["employment_income"],
            **identity,
        },
        "disclosures": {
            "is_control_person": False,
            "is_affiliated_exchange_or_finra": False,
            "is_politically_exposed": False,
            "immediate_family_exposed": False,
        },
        "agreements": [
            {"agreement": "customer_agreement", "signed_at": "2025-01-01T00:00:00Z", "ip_address": "127.0.0.1"}
        ],
    }
    return msgspec.convert(raw, AccountApplication)


BANK = ManualAchRequest(bank_account_type="CHECKING", bank_account_number="123456789", bank_routing_number="121000358")


def open_account(broker: PaperBroker, email: str = "ada@example.com") -> tuple[str, str]:
    """An ACTIVE account with a bank link: (account id, relationship id)."""
    account = broker.create_account(application(email))
    rel = broker.create_ach_relationship(account.id, BANK)
    return account.id, rel.id


def funded_account(
    broker: PaperBroker, clock: ManualClock, amount: str, email: str = "ada@example.com"
) -> tuple[str, str]:
    """Opens and funds an account on Monday; leaves the clock on Tuesday morning with the deposit complete."""
    clock.set(MON_MORNING)
    account_id, rel_id = open_account(broker, email)
    broker.create_transfer(account_id, rel_id, Decimal(amount), "INCOMING")
    clock.set(TUE_MORNING)
    return account_id, rel_id
