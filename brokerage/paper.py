"""PaperBroker: the embedded default broker, a real cash-and-shares ledger in SQL on the market clock.

The database is the truth: every change is one transaction that first locks the account row
(`BEGIN IMMEDIATE` on SQLite, `SELECT ... FOR UPDATE` on PostgreSQL), loads the account under that
lock as a `Book`, lets the money rules of `brokerage.paper_ledger` decide, and writes what they
decided through `brokerage.paper_tables`; so concurrent requests on one account cannot overdraw it
and a restart loses nothing. Time-driven steps (onboarding approval, ACH transfers moving on,
queued orders filling at the open, day limit orders expiring) are applied, under the same lock,
by whichever call touches the account next, or by `process_due()` for all accounts; `next_due()`
says when the next one falls due, so `brokerage.paper_stepper` sleeps until exactly then instead
of polling. The `on_change` hook hears the accounts whose holdings a call changed, and also those
for which it scheduled a step (a new account, transfer or order), so whoever runs the steps plans
again. Timing and rounding rules are in `brokerage.paper_rules`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from brokerage import models, paper_rows
from brokerage import paper_ledger as ledger
from brokerage import paper_rules as rules
from brokerage.aba import is_valid_routing_number
from brokerage.errors import (
    BrokerageError,
    Conflict,
    InvalidRequest,
    Rejected,
    Unavailable,
)
from brokerage.ledger_schema import COMPONENT, STEPS
from brokerage.paper_ledger import CLOSED, OPEN_ORDER, OpenOrder, OrderTerms
from brokerage.paper_reads import LedgerReads
from brokerage.paper_session import LedgerSessions, NextDue, OnChange
from brokerage.paper_tables import LedgerTables, new_id, ts
from brokerage.prices import PriceReader
from brokerage.sql import DATABASE_DOWN, INTEGRITY, Database
from brokerage.store import check_email, normalize_email
from engine import calendar
from engine.clock import Clock
from engine.config import Settings
from engine.types import AccountHoldings

_T = TypeVar("_T", bound=Callable[..., Any])


def _ledger_errors(method: _T) -> _T:
    """The Broker port promises typed errors: a database that is down or locked out is Unavailable (503)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except DATABASE_DOWN as exc:
            raise Unavailable(f"the ledger database is unavailable: {exc}", code="ledger_unavailable") from exc

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature; mypy cannot see it


class PaperBroker:
    """The `Broker` protocol on a SQL ledger; see the module docstring for its rules."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        prices: PriceReader,
        *,
        settings: Settings | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        settings = settings or Settings()
        self.db = db
        self.ach_daily_limit = settings.ach_daily_limit
        self.pdt = ledger.Pdt(settings.pdt_enabled, settings.pdt_equity_threshold, settings.pdt_max_day_trades)
        self.sessions = LedgerSessions(db, clock, prices, self.pdt, on_change)
        self.tables = self.sessions.tables
        self.reads = LedgerReads(self.sessions)
        try:
            db.migrate(COMPONENT, STEPS)
        except DATABASE_DOWN as exc:
            raise Unavailable(f"the ledger database is unavailable: {exc}", code="ledger_unavailable") from exc

    # --- accounts ---------------------------------------------------------------------------
    @_ledger_errors
    def create_account(self, application: models.AccountApplication) -> models.BrokerAccount:
        """Validates the application and files it as SUBMITTED; approval follows on the next touch or ledger step."""
        app = rules.check_application(application, dt.date.today())  # noqa: DTZ011 - the applicant's age, by this machine's calendar
        account_id = new_id()
        email = check_email(app.contact.email_address)
        owner = f"{app.identity.given_name.strip()} {app.identity.family_name.strip()}"
        stored = msgspec.json.encode(paper_rows.masked_application(app)).decode()
        number = "PA" + str(uuid.uuid4().int % 10**10).zfill(10)
        try:
            with self.db.transaction():
                if self.tables.account_id_by_email(email):
                    raise Conflict("an account with this email address already exists", code="email_in_use")
                self.tables.insert_account(account_id, number, email, owner, stored, self.sessions.clock.now())
        except INTEGRITY:
            raise Conflict("an account with this email address already exists", code="email_in_use") from None
        self.sessions.notify([account_id])  # its approval is a step due at once
        return self.reads.account(account_id)

    @_ledger_errors
    def get_account(self, account_id: str) -> models.BrokerAccount:
        self.sessions.sync(account_id)
        return self.reads.account(account_id)

    @_ledger_errors
    def find_account_by_email(self, email: str) -> models.BrokerAccount | None:
        wanted = normalize_email(email)
        account_id = None if wanted is None else self.tables.account_id_by_email(wanted)
        return None if account_id is None else self.get_account(account_id)

    @_ledger_errors
    def close_account(self, account_id: str) -> models.BrokerAccount:
        """Only with no positions, no open orders, no deposit in flight and at most $1.00 cash."""
        with self.sessions.locked(account_id) as a:
            if a.book.status != CLOSED:
                problems = ledger.closure_blockers(a.book, self.tables.deposit_in_flight(a.id))
                if problems:
                    raise Rejected(
                        "account cannot be closed: " + "; ".join(problems), code="close_refused", details=problems
                    )
                self.sessions.set_status(a, CLOSED, "closed on request")
                a.changed.add(a.id)
        return self.reads.account(account_id)

    @_ledger_errors
    def list_account_ids(self, *, include_closed: bool = False) -> list[str]:
        return self.tables.account_ids(include_closed)

    # --- bank links -------------------------------------------------------------------------
    @_ledger_errors
    def list_ach_relationships(self, account_id: str) -> list[models.AchRelationship]:
        self.tables.account(account_id)
        return [paper_rows.ach_relationship(r) for r in self.tables.ach_rows(account_id)]

    @_ledger_errors
    def create_ach_relationship(self, account_id: str, request: models.ManualAchRequest) -> models.AchRelationship:
        try:
            req = msgspec.convert(msgspec.to_builtins(request), models.ManualAchRequest)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"invalid bank details: {exc}") from None
        if not is_valid_routing_number(req.bank_routing_number):
            raise InvalidRequest(
                f"routing number {req.bank_routing_number} fails the ABA checksum",
                code="invalid_routing_number",
                details={"field": "bank_routing_number"},
            )
        return self._add_relationship(
            account_id,
            bank_account_type=req.bank_account_type,
            bank_account_number=req.bank_account_number,
            bank_routing_number=req.bank_routing_number,
            nickname=req.nickname,
            bank_name=None,
            processor_token=None,
        )

    @_ledger_errors
    def create_ach_relationship_from_processor_token(
        self, account_id: str, processor_token: str
    ) -> models.AchRelationship:
        """A bank link from a Plaid processor token; the paper broker trusts the token as verified."""
        if (
            not isinstance(processor_token, str)
            or not 8 <= len(processor_token) <= 256
            or not processor_token.isprintable()
            or any(c.isspace() for c in processor_token)
        ):
            raise InvalidRequest(
                "processor_token must be a Plaid processor token", details={"field": "processor_token"}
            )
        mask = str(int(hashlib.sha256(processor_token.encode()).hexdigest(), 16) % 10**4).zfill(4)
        return self._add_relationship(
            account_id,
            bank_account_type="CHECKING",
            bank_account_number=f"****{mask}",
            bank_routing_number="",
            nickname="Plaid linked account",
            bank_name="Plaid",
            processor_token=processor_token,
        )

    @_ledger_errors
    def delete_ach_relationship(self, account_id: str, relationship_id: str) -> None:
        with self.sessions.locked(account_id) as a:
            if self.tables.ach_row(a.id, relationship_id)["status"] != "CANCELED":
                self.tables.cancel_ach(relationship_id, a.now)

    def _add_relationship(self, account_id: str, **bank: str | None) -> models.AchRelationship:
        rel_id = new_id()
        refusal = Conflict(
            "this account already has an active ACH relationship; delete it first", code="ach_relationship_exists"
        )
        try:
            with self.sessions.locked(account_id) as a:
                ledger.require_active(a.book)
                if self.tables.has_active_ach(a.id):
                    raise refusal
                self.tables.insert_ach(rel_id, a.id, a.now, bank)
        except INTEGRITY:  # a concurrent link won the unique index
            raise refusal from None
        return paper_rows.ach_relationship(self.tables.ach_row(account_id, rel_id))

    # --- transfers --------------------------------------------------------------------------
    @_ledger_errors
    def create_transfer(
        self, account_id: str, relationship_id: str, amount: Decimal, direction: str
    ) -> models.Transfer:
        amount = rules.check_amount(amount)
        direction = direction.upper() if isinstance(direction, str) else ""
        if direction not in ("INCOMING", "OUTGOING"):
            raise InvalidRequest("direction must be INCOMING or OUTGOING", details={"field": "direction"})
        transfer_id = new_id()
        with self.sessions.locked(account_id) as a:
            ledger.require_active(a.book)
            status = self.tables.ach_row(a.id, relationship_id)["status"]
            if status != "APPROVED":
                raise Rejected(f"ACH relationship is {status}", code="ach_not_approved")
            sent, complete = rules.transfer_schedule(a.now)
            today = rules.new_york_date(a.now)
            if direction == "OUTGOING":
                available = ledger.withdrawable(
                    a.book.cash, self.tables.unsettled(a.id, today), a.book.buy_reserves()
                )
                sent_today = ledger.counted_withdrawals(self.tables.withdrawals_on(a.id, today.isoformat()))
                ledger.check_withdrawal(amount, available, sent_today, self.ach_daily_limit)
                self.sessions.set_cash(a, a.book.cash - amount)
                moved = rules.current_session(a.now)
            else:
                moved = rules.current_session(complete)
            self.tables.insert_transfer(
                {
                    "id": transfer_id, "account_id": a.id, "relationship_id": relationship_id,
                    "amount": str(amount), "direction": direction, "ach_day": today.isoformat(),
                    "session": moved.isoformat(), "created_at": ts(a.now), "sent_at": ts(sent),
                    "complete_at": ts(complete),
                }
            )
            a.changed.add(a.id)  # its cut-off and completion are steps to come
        return paper_rows.transfer(self.tables.transfer_row(account_id, transfer_id))

    @_ledger_errors
    def get_transfer(self, account_id: str, transfer_id: str) -> models.Transfer:
        self.sessions.sync(account_id)
        return paper_rows.transfer(self.tables.transfer_row(account_id, transfer_id))

    @_ledger_errors
    def list_transfers(self, account_id: str) -> list[models.Transfer]:
        self.sessions.sync(account_id)
        return [paper_rows.transfer(r) for r in self.tables.transfer_rows(account_id)]

    @_ledger_errors
    def cancel_transfer(self, account_id: str, transfer_id: str) -> None:
        """Only a QUEUED transfer can be cancelled; a cancelled withdrawal returns its cash."""
        with self.sessions.locked(account_id) as a:
            row = self.tables.transfer_row(a.id, transfer_id)
            if row["status"] == "CANCELED":
                return
            refund = ledger.cancel_transfer_refund(row["direction"], row["status"], Decimal(row["amount"]))
            self.tables.set_transfer_status(transfer_id, "CANCELED", a.now)
            if refund:
                self.sessions.set_cash(a, a.book.cash + refund)

    # --- trading ----------------------------------------------------------------------------
    @_ledger_errors
    def submit_order(self, account_id: str, request: models.OrderRequest) -> models.Order:
        """Validates, checks funds or shares, records the order and fills it if the market is open.

        A refusal (no price, no funds, no shares, PDT) raises `Rejected` and records nothing; an
        order queued while the market is closed is re-checked when it fills at the next open.
        """
        req = rules.check_order(request)
        with self.sessions.locked(account_id) as a:
            ledger.require_active(a.book)
            existing = self.tables.order_by_client_id(a.id, req.client_order_id)
            if existing is not None:
                return paper_rows.order(existing)
            last = self.sessions.prices.last(req.symbol)
            if last is None:
                raise Rejected(
                    f"no price for {req.symbol}: the symbol is not priced by the market data feed", code="no_price"
                )
            price = rules.to_price(last.last)
            order = OrderTerms(
                id=new_id(), symbol=req.symbol, side=req.side, type=req.type, time_in_force=req.time_in_force,
                session=calendar.session_of(a.now), qty=req.qty, notional=req.notional, limit_price=req.limit_price,
            )
            reserve = ledger.reserve_for(a.book, order, price)
            self.tables.insert_order(order, req.client_order_id, a.id, reserve, a.now)
            a.book = replace(
                a.book, open_orders=(*a.book.open_orders, OpenOrder(order.id, order.symbol, order.side, reserve))
            )
            a.changed.add(a.id)  # filled now, or a step to come (the next open, the day's close)
            if a.is_open:
                if ledger.marketable(order, price):
                    refusal = self.sessions.fill(a, order, price)
                    if refusal is not None:
                        raise Rejected(refusal.message, code=refusal.code)
                else:
                    self.tables.set_order_status(order.id, "new", a.now)
        return paper_rows.order(self.tables.order_row(account_id, order.id))

    @_ledger_errors
    def get_order(self, account_id: str, order_id: str) -> models.Order:
        self.sessions.sync(account_id)
        return paper_rows.order(self.tables.order_row(account_id, order_id))

    @_ledger_errors
    def list_orders(self, account_id: str, status: str = "all") -> list[models.Order]:
        if status not in ("open", "closed", "all"):
            raise InvalidRequest("status must be open, closed or all", details={"field": "status"})
        self.sessions.sync(account_id)
        rows = self.tables.order_rows(account_id)
        if status != "all":
            rows = [r for r in rows if (r["status"] in OPEN_ORDER) == (status == "open")]
        return [paper_rows.order(r) for r in rows]

    @_ledger_errors
    def cancel_order(self, account_id: str, order_id: str) -> None:
        with self.sessions.locked(account_id) as a:
            status = self.tables.order_row(a.id, order_id)["status"]
            if status == "canceled":
                return
            if status not in OPEN_ORDER:
                raise Rejected(f"order is {status} and can no longer be cancelled", code="not_cancelable")
            self.sessions.close_order(a, order_id, "canceled")

    @_ledger_errors
    def list_positions(self, account_id: str) -> list[models.BrokerPosition]:
        self.sessions.sync(account_id)
        return self.reads.positions(account_id)

    @_ledger_errors
    def list_activities(self, account_id: str) -> list[models.Activity]:
        self.sessions.sync(account_id)
        return self.reads.activities(account_id)

    @_ledger_errors
    def holdings(self, account_id: str) -> AccountHoldings | None:
        self.sessions.sync(account_id)
        return self.reads.holdings(account_id)

    @_ledger_errors
    def close_all_positions(self, account_id: str) -> list[models.CloseResult]:
        """Cancels every open order, then sells each position at market (queued if closed)."""
        with self.sessions.locked(account_id) as a:
            ledger.require_active(a.book)
            for o in a.book.open_orders:
                self.sessions.close_order(a, o.id, "canceled")
            positions = sorted(a.book.holdings.items())
        results = []
        for symbol, held in positions:
            try:
                order = self.submit_order(account_id, models.OrderRequest(symbol=symbol, side="sell", qty=held.qty))
                results.append(models.CloseResult(symbol=symbol, status=200, order_id=order.id))
            except BrokerageError as exc:
                results.append(models.CloseResult(symbol=symbol, status=exc.status, message=exc.message))
        return results

    # --- time-driven steps ------------------------------------------------------------------
    @_ledger_errors
    def next_due(self) -> NextDue:
        """When `process_due` next has work, so its caller can sleep until then instead of polling."""
        return self.sessions.next_due()

    @_ledger_errors
    def process_due(self) -> list[str]:
        """Applies every due step on every account; returns the accounts whose holdings changed."""
        return self.sessions.process_due()


def newest_record(db: Database) -> dt.datetime | None:
    """The latest market moment the ledger recorded anything at (None for an empty ledger): a restarted
    paper world's clock must not start before it, or its history would lie in its future."""
    db.migrate(COMPONENT, STEPS)
    return LedgerTables(db).newest_record()
