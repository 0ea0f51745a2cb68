"""Demo users and accounts for `clera serve`: a person who can sign in and watch portfolios move at once.

The target holdings come from `engine/data/demo_accounts.json`. With the paper broker the accounts
are opened through the Broker port like any customer's (application, bank link, ACH deposit,
market buys), so the ledger, the live engine and the brokerage routes all agree on them. Each
step checks the broker's state first, so running this again after a restart finishes what an
interrupted run started and never deposits or buys twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Callable
from decimal import Decimal

from brokerage.broker import Broker
from brokerage.errors import BrokerageError
from brokerage.models import (
    AccountApplication,
    Agreement,
    Contact,
    Disclosures,
    Identity,
    ManualAchRequest,
    OrderRequest,
)
from brokerage.store import Store
from engine.demo_positions import FilePositionSource
from engine.types import AccountHoldings

log = logging.getLogger("clera.demo")

DEMO_USER = "demo-user"
DEMO_EMAIL = "demo@clera.local"
DEMO_DOMAIN = "demo.clera.local"
DEMO_ROUTING = "121000358"
FUNDING_MARGIN = Decimal("1.3")  # the deposit covers the buys even if prices moved up since the file was written

PriceOf = Callable[[str], float | None]


def _application(label: str) -> AccountApplication:
    return AccountApplication(
        contact=Contact(
            email_address=f"{label}@{DEMO_DOMAIN}", phone_number="555-555-0100",
            street_address=["1 Demo Way"], city="San Francisco", postal_code="94105", state="CA",
        ),
        identity=Identity(
            given_name="Demo", family_name=label.removeprefix("demo-").replace("-", " ").title() or "Investor",
            date_of_birth=dt.date(1985, 1, 1), country_of_tax_residence="USA", funding_source=["employment_income"],
        ),
        disclosures=Disclosures(
            is_control_person=False, is_affiliated_exchange_or_finra=False, is_politically_exposed=False,
            immediate_family_exposed=False,
        ),
        agreements=[Agreement(agreement="customer_agreement", signed_at=dt.datetime.now(dt.UTC),
                              ip_address="127.0.0.1")],
    )


def demo_holdings(path: str | None) -> list[AccountHoldings]:
    return FilePositionSource(path).load_all()


def create_demo_accounts(store: Store, broker: Broker | None, holdings: list[AccountHoldings]) -> list[str]:
    """On first start: the demo user and their accounts (in the broker when there is one); their ids."""
    store.ensure_user(DEMO_USER, email=DEMO_EMAIL)
    existing = [a.account_id for a in store.accounts_of(DEMO_USER)]
    if existing:
        return existing
    ids: list[str] = []
    for target in holdings:
        if broker is None:
            store.add_account(DEMO_USER, target.account_id, status="active")
            ids.append(target.account_id)
            continue
        account = broker.create_account(_application(target.account_id))
        store.add_account(
            DEMO_USER, account.id, email=account.email, account_number=account.account_number, status="active"
        )
        ids.append(account.id)
    return ids


def demo_targets(store: Store, holdings: list[AccountHoldings]) -> list[tuple[str, AccountHoldings]]:
    """(account id, target holdings) of the demo user's accounts; a broker account is matched to its
    file entry by the application's email (`<file id>@demo.clera.local`), a store-only one by id."""
    by_label = {h.account_id: h for h in holdings}
    pairs = []
    for record in store.accounts_of(DEMO_USER):
        label = record.account_id
        if record.email and record.email.endswith("@" + DEMO_DOMAIN):
            label = record.email.split("@", 1)[0]
        if label in by_label:
            pairs.append((record.account_id, by_label[label]))
    return pairs


def _deposit_for(target: AccountHoldings, price_of: PriceOf) -> Decimal:
    """Enough for the cash and the buys; a symbol without a live price yet (nobody holds it, so the
    engine does not stream it) is budgeted at twice its entry price from the file."""
    total = target.cash
    for position in target.positions:
        price = price_of(position.symbol)
        unit = position.avg_entry_price * 2 if price is None else max(Decimal(str(price)), position.avg_entry_price)
        total += position.qty * unit * FUNDING_MARGIN
    return Decimal(math.ceil(total))


def converge(broker: Broker, account_id: str, target: AccountHoldings, price_of: PriceOf) -> bool:
    """One step toward `target`; True once it is funded and every position is held. Safe to repeat."""
    broker.get_account(account_id)  # the paper broker approves and settles lazily, on touch
    held = {p.symbol: p.qty for p in broker.list_positions(account_id)}
    missing = [p for p in target.positions if held.get(p.symbol, Decimal(0)) < p.qty]
    if not broker.list_transfers(account_id):
        if not missing and target.cash <= 0:
            return True
        amount = _deposit_for(target, price_of)
        relationships = broker.list_ach_relationships(account_id)
        relationship = relationships[0] if relationships else broker.create_ach_relationship(
            account_id,
            ManualAchRequest(bank_account_type="CHECKING", bank_account_number="000123456789",
                             bank_routing_number=DEMO_ROUTING, nickname="Demo checking"),
        )
        broker.create_transfer(account_id, relationship.id, amount, "INCOMING")
        return False
    if not missing:
        return True
    account = broker.get_account(account_id)
    if account.cash <= target.cash:
        return False  # the deposit has not arrived yet
    for position in missing:
        broker.submit_order(
            account_id,
            OrderRequest(symbol=position.symbol, side="buy", qty=position.qty - held.get(position.symbol, Decimal(0)),
                         client_order_id=f"demo-{account_id}-{position.symbol}"),
        )
    return False


def fund_in_background(
    broker: Broker, pairs: list[tuple[str, AccountHoldings]], price_of: PriceOf, stop: threading.Event,
    poll_s: float = 2.0,
) -> threading.Thread:
    """Drives every demo account to its holdings (deposits clear at the next replayed open, buys fill
    while the market is open), then ends."""

    def run() -> None:
        pending = dict(pairs)
        while pending and not stop.is_set():
            for account_id, target in list(pending.items()):
                try:
                    if converge(broker, account_id, target, price_of):
                        del pending[account_id]
                except BrokerageError as exc:
                    log.warning("demo account %s: %s", account_id, exc.message)
            stop.wait(poll_s)

    thread = threading.Thread(target=run, name="demo-funding", daemon=True)
    thread.start()
    return thread
