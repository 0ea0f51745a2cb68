"""PaperBroker: the embedded default broker, a real cash-and-shares ledger in SQL on the market clock.

The database is the truth: every change is one transaction that first locks the account row
(`BEGIN IMMEDIATE` on SQLite, `SELECT ... FOR UPDATE` on PostgreSQL), re-reads the balances under
that lock and only then checks and writes, so concurrent requests on one account cannot overdraw
it and a restart loses nothing. Time-driven steps (onboarding approval, ACH transfers moving on,
queued orders filling at the open, day limit orders expiring) are applied lazily, under the same
lock, by whichever call touches the account next, or by `process_due()` for all accounts;
`next_due()` says when the next one falls due, so `brokerage.paper_stepper` sleeps until exactly
then instead of polling. The `on_change` hook hears the accounts whose holdings a call changed, and
also those for which it scheduled a step (a new account, transfer or order), so whoever runs the
steps plans again. Timing and rounding rules are in `brokerage.paper_rules`.

Ledger rules: a buy pays `round(qty * price, cents)`; a position keeps its cost basis (average
cost; a partial sale removes its share of the cost, rounded to cents); sale proceeds are cash at
once (usable for buying) but withdrawable only after T+1 settlement; open buy orders set cash
aside and open sell orders set shares aside, so neither can be spent twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from brokerage import paper_rows
from brokerage import paper_rules as rules
from brokerage.aba import is_valid_routing_number
from brokerage.errors import BrokerageError, Conflict, InvalidRequest, NotFound, Rejected, Unavailable
from brokerage.ledger_schema import COMPONENT, STEPS
from brokerage.models import (
    AccountApplication,
    AchRelationship,
    Activity,
    BrokerAccount,
    BrokerPosition,
    CloseResult,
    ManualAchRequest,
    Order,
    OrderRequest,
    Transfer,
)
from brokerage.prices import PriceReader
from brokerage.sql import DATABASE_DOWN, INTEGRITY, Database, Row
from brokerage.store import check_email, normalize_email
from engine import calendar
from engine.clock import Clock
from engine.config import Settings
from engine.types import AccountHoldings, LastPrice, Position

log = logging.getLogger(__name__)

ZERO = Decimal(0)
OPEN_ORDER = ("new", "accepted")
VOID_TRANSFER = ("CANCELED", "REJECTED", "RETURNED")
CLOSED = "ACCOUNT_CLOSED"

OnChange = Callable[[list[str]], None]
_T = TypeVar("_T", bound=Callable[..., Any])


def _ledger_errors(method: _T) -> _T:
    """The Broker port promises typed errors: a database that is down or locked out is Unavailable (503)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except DATABASE_DOWN as exc:
            raise Unavailable(f"the ledger database is unavailable: {exc}", code="ledger_unavailable") from exc

    return wrapper  # type: ignore[return-value]


def _ts(moment: dt.datetime) -> float:
    return moment.timestamp()


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class NextDue:
    """When the ledger next changes by itself.

    `at` is the market time of the earliest time-driven step, None when none is pending (already
    past when a step is due). `waiting_on_prices` is true while orders are open during the session:
    they fill when the price lets them, at no moment known in advance.
    """

    at: dt.datetime | None
    waiting_on_prices: bool


@dataclass
class _Locked:
    """One account row held under lock for the length of a transaction."""

    id: str
    status: str
    cash: Decimal
    now: dt.datetime
    is_open: bool
    changed: set[str] = field(default_factory=set)


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
        self.clock = clock
        self.prices = prices
        self.on_change = on_change
        self.ach_daily_limit = settings.ach_daily_limit
        self.pdt_enabled = settings.pdt_enabled
        self.pdt_equity_threshold = settings.pdt_equity_threshold
        self.pdt_max_day_trades = settings.pdt_max_day_trades
        try:
            db.migrate(COMPONENT, STEPS)
        except DATABASE_DOWN as exc:
            raise Unavailable(f"the ledger database is unavailable: {exc}", code="ledger_unavailable") from exc

    # ======================================================================================
    # accounts
    # ======================================================================================
    @_ledger_errors
    def create_account(self, application: AccountApplication) -> BrokerAccount:
        """Validates the application and files it as SUBMITTED; approval follows on the next touch or ledger step."""
        app = self._check_application(application)
        now = self.clock.now()
        account_id = _new_id()
        email = check_email(app.contact.email_address)
        owner = f"{app.identity.given_name.strip()} {app.identity.family_name.strip()}"
        stored = msgspec.json.encode(paper_rows.masked_application(app)).decode()
        number = "PA" + str(uuid.uuid4().int % 10**10).zfill(10)
        try:
            with self.db.transaction():
                if self.db.fetchone("SELECT id FROM paper_accounts WHERE email = ?", (email,)):
                    raise Conflict("an account with this email address already exists", code="email_in_use")
                self.db.execute(
                    "INSERT INTO paper_accounts (id, account_number, status, email, owner_name, application,"
                    " cash, created_at, updated_at) VALUES (?, ?, 'SUBMITTED', ?, ?, ?, '0.00', ?, ?)",
                    (account_id, number, email, owner, stored, _ts(now), _ts(now)),
                )
                self._event(account_id, "SUBMITTED", now, "application received")
        except INTEGRITY:
            raise Conflict("an account with this email address already exists", code="email_in_use") from None
        self._notify([account_id])  # its approval is a step due at once
        return self._view(account_id)

    @_ledger_errors
    def get_account(self, account_id: str) -> BrokerAccount:
        self._sync(account_id)
        return self._view(account_id)

    @_ledger_errors
    def find_account_by_email(self, email: str) -> BrokerAccount | None:
        row = self.db.fetchone("SELECT id FROM paper_accounts WHERE email = ?", (normalize_email(email),))
        return None if row is None else self.get_account(row["id"])

    def _view(self, account_id: str) -> BrokerAccount:
        row = self._account_row(account_id)
        return self._account_view(row, self.clock.now())

    @_ledger_errors
    def close_account(self, account_id: str) -> BrokerAccount:
        """Only with no positions, no open orders, no deposit in flight and at most $1.00 cash."""
        with self._locked(account_id) as a:
            if a.status != CLOSED:
                problems = self._closure_blockers(a)
                if problems:
                    raise Rejected(
                        "account cannot be closed: " + "; ".join(problems), code="close_refused", details=problems
                    )
                self._set_status(a, CLOSED, "closed on request")
                a.changed.add(a.id)
        return self._view(account_id)

    @_ledger_errors
    def list_account_ids(self, *, include_closed: bool = False) -> list[str]:
        sql = "SELECT id FROM paper_accounts" + ("" if include_closed else " WHERE status <> ?") + " ORDER BY id"
        return [r["id"] for r in self.db.fetchall(sql, () if include_closed else (CLOSED,))]

    # ======================================================================================
    # bank links
    # ======================================================================================
    @_ledger_errors
    def list_ach_relationships(self, account_id: str) -> list[AchRelationship]:
        self._account_row(account_id)
        rows = self.db.fetchall(
            "SELECT * FROM paper_ach WHERE account_id = ? ORDER BY created_at, id", (account_id,)
        )
        return [paper_rows.ach_relationship(r) for r in rows]

    @_ledger_errors
    def create_ach_relationship(self, account_id: str, request: ManualAchRequest) -> AchRelationship:
        try:
            req = msgspec.convert(msgspec.to_builtins(request), ManualAchRequest)
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
    ) -> AchRelationship:
        """A bank link from a Plaid processor token; the paper broker trusts the token as verified."""
        if (
            not isinstance(processor_token, str)
            or not 8 <= len(processor_token) <= 256
            or not processor_token.isprintable()
            or any(c.isspace() for c in processor_token)
        ):
            raise InvalidRequest("processor_token must be a Plaid processor token", details={"field": "processor_token"})
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
        with self._locked(account_id) as a:
            row = self.db.fetchone(
                "SELECT status FROM paper_ach WHERE id = ? AND account_id = ?", (relationship_id, a.id)
            )
            if row is None:
                raise NotFound(f"ACH relationship {relationship_id} not found", code="ach_not_found")
            if row["status"] != "CANCELED":
                self.db.execute(
                    "UPDATE paper_ach SET status = 'CANCELED', updated_at = ? WHERE id = ?",
                    (_ts(a.now), relationship_id),
                )

    def _add_relationship(self, account_id: str, **bank: str | None) -> AchRelationship:
        rel_id = _new_id()
        try:
            with self._locked(account_id) as a:
                self._require_active(a)
                if self.db.fetchone(
                    "SELECT id FROM paper_ach WHERE account_id = ? AND status <> 'CANCELED'", (a.id,)
                ):
                    raise Conflict(
                        "this account already has an active ACH relationship; delete it first",
                        code="ach_relationship_exists",
                    )
                owner = self.db.fetchone("SELECT owner_name FROM paper_accounts WHERE id = ?", (a.id,))
                now = _ts(a.now)
                self.db.execute(
                    "INSERT INTO paper_ach (id, account_id, status, owner_name, bank_account_type,"
                    " bank_account_number, bank_routing_number, nickname, bank_name, processor_token,"
                    " created_at, updated_at) VALUES (?, ?, 'APPROVED', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rel_id, a.id, owner["owner_name"] if owner else "", bank["bank_account_type"],
                        bank["bank_account_number"], bank["bank_routing_number"], bank["nickname"],
                        bank["bank_name"], bank["processor_token"], now, now,
                    ),
                )
        except INTEGRITY:
            raise Conflict(
                "this account already has an active ACH relationship; delete it first", code="ach_relationship_exists"
            ) from None
        row = self.db.fetchone("SELECT * FROM paper_ach WHERE id = ?", (rel_id,))
        assert row is not None
        return paper_rows.ach_relationship(row)

    # ======================================================================================
    # transfers
    # ======================================================================================
    @_ledger_errors
    def create_transfer(
        self, account_id: str, relationship_id: str, amount: Decimal, direction: str
    ) -> Transfer:
        amount = rules.check_amount(amount)
        direction = direction.upper() if isinstance(direction, str) else ""
        if direction not in ("INCOMING", "OUTGOING"):
            raise InvalidRequest("direction must be INCOMING or OUTGOING", details={"field": "direction"})
        transfer_id = _new_id()
        with self._locked(account_id) as a:
            self._require_active(a)
            rel = self.db.fetchone(
                "SELECT status FROM paper_ach WHERE id = ? AND account_id = ?", (relationship_id, a.id)
            )
            if rel is None:
                raise NotFound(f"ACH relationship {relationship_id} not found", code="ach_not_found")
            if rel["status"] != "APPROVED":
                raise Rejected(f"ACH relationship is {rel['status']}", code="ach_not_approved")
            sent, complete = rules.transfer_schedule(a.now)
            day = rules.new_york_date(a.now).isoformat()
            if direction == "OUTGOING":
                withdrawable = self._withdrawable(a)
                if amount > withdrawable:
                    raise Rejected(
                        f"insufficient withdrawable cash: {amount} requested, {withdrawable} available",
                        code="insufficient_funds",
                    )
                sent_today = sum(
                    (
                        Decimal(r["amount"])
                        for r in self.db.fetchall(
                            "SELECT amount, status FROM paper_transfers"
                            " WHERE account_id = ? AND direction = 'OUTGOING' AND ach_day = ?",
                            (a.id, day),
                        )
                        if r["status"] not in VOID_TRANSFER
                    ),
                    ZERO,
                )
                if sent_today + amount > self.ach_daily_limit:
                    raise Rejected(
                        f"daily ACH withdrawal limit of {self.ach_daily_limit} exceeded"
                        f" ({sent_today} already withdrawn today)",
                        code="ach_daily_limit",
                    )
                self._set_cash(a, a.cash - amount)
                moved = rules.current_session(a.now)
            else:
                moved = rules.current_session(complete)
            self.db.execute(
                "INSERT INTO paper_transfers (id, account_id, relationship_id, amount, direction, status,"
                " ach_day, session, created_at, updated_at, sent_at, complete_at)"
                " VALUES (?, ?, ?, ?, ?, 'QUEUED', ?, ?, ?, ?, ?, ?)",
                (
                    transfer_id, a.id, relationship_id, str(amount), direction, day, moved.isoformat(),
                    _ts(a.now), _ts(a.now), _ts(sent), _ts(complete),
                ),
            )
            a.changed.add(a.id)  # its cut-off and completion are steps to come
        return self._transfer(account_id, transfer_id)

    @_ledger_errors
    def get_transfer(self, account_id: str, transfer_id: str) -> Transfer:
        self._sync(account_id)
        return self._transfer(account_id, transfer_id)

    @_ledger_errors
    def list_transfers(self, account_id: str) -> list[Transfer]:
        self._sync(account_id)
        rows = self.db.fetchall(
            "SELECT * FROM paper_transfers WHERE account_id = ? ORDER BY created_at DESC, id", (account_id,)
        )
        return [paper_rows.transfer(r) for r in rows]

    @_ledger_errors
    def cancel_transfer(self, account_id: str, transfer_id: str) -> None:
        """Only a QUEUED transfer can be cancelled; a cancelled withdrawal returns its cash."""
        with self._locked(account_id) as a:
            row = self.db.fetchone(
                "SELECT * FROM paper_transfers WHERE id = ? AND account_id = ?", (transfer_id, a.id)
            )
            if row is None:
                raise NotFound(f"transfer {transfer_id} not found", code="transfer_not_found")
            if row["status"] == "CANCELED":
                return
            if row["status"] != "QUEUED":
                raise Rejected(f"transfer is {row['status']} and can no longer be cancelled", code="not_cancelable")
            self.db.execute(
                "UPDATE paper_transfers SET status = 'CANCELED', updated_at = ? WHERE id = ?",
                (_ts(a.now), transfer_id),
            )
            if row["direction"] == "OUTGOING":
                self._set_cash(a, a.cash + Decimal(row["amount"]))

    def _transfer(self, account_id: str, transfer_id: str) -> Transfer:
        row = self.db.fetchone(
            "SELECT * FROM paper_transfers WHERE id = ? AND account_id = ?", (transfer_id, account_id)
        )
        if row is None:
            raise NotFound(f"transfer {transfer_id} not found", code="transfer_not_found")
        return paper_rows.transfer(row)

    # ======================================================================================
    # trading
    # ======================================================================================
    @_ledger_errors
    def submit_order(self, account_id: str, request: OrderRequest) -> Order:
        """Validates, checks funds or shares, records the order and fills it if the market is open.

        A refusal (no price, no funds, no shares, PDT) raises `Rejected` and records nothing; an
        order queued while the market is closed is re-checked when it fills at the next open.
        """
        req = rules.check_order(request)
        order_id = _new_id()
        with self._locked(account_id) as a:
            self._require_active(a)
            existing = self.db.fetchone(
                "SELECT * FROM paper_orders WHERE account_id = ? AND client_order_id = ?",
                (a.id, req.client_order_id),
            )
            if existing is not None:
                return paper_rows.order(existing)
            last = self.prices.last(req.symbol)
            if last is None:
                raise Rejected(
                    f"no price for {req.symbol}: the symbol is not priced by the market data feed",
                    code="no_price",
                )
            price = rules.to_price(last.last)
            reserve = self._reserve_for(a, req, price)
            session = calendar.session_of(a.now)
            self.db.execute(
                "INSERT INTO paper_orders (id, client_order_id, account_id, symbol, side, type, time_in_force,"
                " status, qty, notional, limit_price, reserve, filled_qty, session, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?, '0', ?, ?, ?)",
                (
                    order_id, req.client_order_id, a.id, req.symbol, req.side, req.type, req.time_in_force,
                    _s(req.qty), _s(req.notional), _s(req.limit_price), str(reserve), session.isoformat(),
                    _ts(a.now), _ts(a.now),
                ),
            )
            a.changed.add(a.id)  # filled now, or a step to come (the next open, the day's close)
            if a.is_open:
                row = self._order_row(a.id, order_id)
                if _marketable(row, price):
                    refusal = self._execute(a, row, price)
                    if refusal is not None:
                        raise Rejected(refusal.message, code=refusal.code)
                else:
                    self._set_order_status(order_id, "new", a.now)
        return paper_rows.order(self._order_row(account_id, order_id))

    @_ledger_errors
    def get_order(self, account_id: str, order_id: str) -> Order:
        self._sync(account_id)
        return paper_rows.order(self._order_row(account_id, order_id))

    @_ledger_errors
    def list_orders(self, account_id: str, status: str = "all") -> list[Order]:
        if status not in ("open", "closed", "all"):
            raise InvalidRequest("status must be open, closed or all", details={"field": "status"})
        self._sync(account_id)
        rows = self.db.fetchall(
            "SELECT * FROM paper_orders WHERE account_id = ? ORDER BY created_at DESC, id", (account_id,)
        )
        if status != "all":
            rows = [r for r in rows if (r["status"] in OPEN_ORDER) == (status == "open")]
        return [paper_rows.order(r) for r in rows]

    @_ledger_errors
    def cancel_order(self, account_id: str, order_id: str) -> None:
        with self._locked(account_id) as a:
            row = self._order_row(a.id, order_id)
            if row["status"] == "canceled":
                return
            if row["status"] not in OPEN_ORDER:
                raise Rejected(f"order is {row['status']} and can no longer be cancelled", code="not_cancelable")
            self._set_order_status(order_id, "canceled", a.now)

    @_ledger_errors
    def list_positions(self, account_id: str) -> list[BrokerPosition]:
        self._sync(account_id)
        rows = self.db.fetchall(
            "SELECT * FROM paper_positions WHERE account_id = ? ORDER BY symbol", (account_id,)
        )
        held = self._open_sell_reserves(account_id)
        out = []
        for r in rows:
            qty, cost = Decimal(r["qty"]), Decimal(r["cost_basis"])
            last = self._quiet_price(r["symbol"])
            price = rules.to_price(last.last) if last else None
            out.append(
                BrokerPosition(
                    symbol=r["symbol"],
                    qty=qty,
                    avg_entry_price=(cost / qty).quantize(rules.PRICE_STEP),
                    cost_basis=cost,
                    current_price=price,
                    market_value=rules.cents(qty * price) if price is not None else None,
                    lastday_price=rules.to_price(last.prev_close) if last and last.prev_close > 0 else None,
                    qty_available=qty - held.get(r["symbol"], ZERO),
                )
            )
        return out

    @_ledger_errors
    def close_all_positions(self, account_id: str) -> list[CloseResult]:
        """Cancels every open order, then sells each position at market (queued if closed)."""
        with self._locked(account_id) as a:
            self._require_active(a)
            for row in self.db.fetchall(
                "SELECT id FROM paper_orders WHERE account_id = ? AND status IN ('new', 'accepted')", (a.id,)
            ):
                self._set_order_status(row["id"], "canceled", a.now)
            positions = self.db.fetchall(
                "SELECT symbol, qty FROM paper_positions WHERE account_id = ? ORDER BY symbol", (a.id,)
            )
        results = []
        for pos in positions:
            try:
                order = self.submit_order(
                    account_id, OrderRequest(symbol=pos["symbol"], side="sell", qty=Decimal(pos["qty"]))
                )
                results.append(CloseResult(symbol=pos["symbol"], status=200, order_id=order.id))
            except BrokerageError as exc:
                results.append(CloseResult(symbol=pos["symbol"], status=exc.status, message=exc.message))
        return results

    @_ledger_errors
    def list_activities(self, account_id: str) -> list[Activity]:
        """Fills (FILL), completed deposits (CSD) and withdrawals that left the account (CSW).

        Newest first, in exactly the reverse of the order the ledger applied them (at one moment,
        transfers before fills, fills in sequence), so replaying the reversed list rebuilds the ledger.
        """
        self._sync(account_id)
        keyed: list[tuple[float, int, int, Activity]] = [
            (f["filled_at"], 1, f["seq"], Activity(
                id=f["id"],
                account_id=account_id,
                activity_type="FILL",
                date=paper_rows.when(f["filled_at"]),  # type: ignore[arg-type]
                net_amount=Decimal(f["amount"]) * (-1 if f["side"] == "buy" else 1),
                symbol=f["symbol"],
                side=f["side"],
                qty=Decimal(f["qty"]),
                price=Decimal(f["price"]),
                order_id=f["order_id"],
                status="filled",
            ))
            for f in self.db.fetchall("SELECT * FROM paper_fills WHERE account_id = ?", (account_id,))
        ]
        for t in self.db.fetchall(
            "SELECT * FROM paper_transfers WHERE account_id = ? ORDER BY created_at, id", (account_id,)
        ):
            amount = Decimal(t["amount"])
            if t["direction"] == "INCOMING" and t["status"] == "COMPLETE":
                at = t["completed_at"]
                keyed.append((at, 0, len(keyed), paper_rows.transfer_activity(t, "CSD", amount, at, "ACH deposit")))
            elif t["direction"] == "OUTGOING" and t["status"] not in VOID_TRANSFER:
                at = t["created_at"]
                keyed.append((at, 0, len(keyed), paper_rows.transfer_activity(t, "CSW", -amount, at, "ACH withdrawal")))
        keyed.sort(key=lambda k: k[:3], reverse=True)
        return [k[3] for k in keyed]

    @_ledger_errors
    def holdings(self, account_id: str) -> AccountHoldings | None:
        """Holdings for the realtime engine straight from the ledger (no price reads); None once closed.

        Same result as `brokerage.positions.holdings_from_activities` on this broker, in a few queries.
        """
        self._sync(account_id)
        row = self._account_row(account_id)
        if row["status"] == CLOSED:
            return None
        now = self.clock.now()
        flows = self._today(account_id, now)
        held = {
            r["symbol"]: (Decimal(r["qty"]), Decimal(r["cost_basis"]))
            for r in self.db.fetchall("SELECT * FROM paper_positions WHERE account_id = ?", (account_id,))
        }
        positions = []
        for symbol in sorted(set(held) | set(flows.bought)):
            qty, cost = held.get(symbol, (ZERO, ZERO))
            positions.append(
                Position(
                    symbol=symbol,
                    qty=qty,
                    start_qty=qty - flows.bought.get(symbol, ZERO),
                    net_cost_today=flows.net_cost.get(symbol, ZERO),
                    avg_entry_price=(cost / qty).quantize(rules.PRICE_STEP) if qty else ZERO,
                )
            )
        return AccountHoldings(
            account_id=account_id,
            cash=Decimal(row["cash"]),
            positions=positions,
            session=flows.session,
            deposits_today=flows.transfers,
            as_of=now.timestamp(),
        )

    # ======================================================================================
    # time-driven processing
    # ======================================================================================
    @_ledger_errors
    def next_due(self) -> NextDue:
        """When `process_due` next has work, so its caller can sleep until then instead of polling.

        The steps: an application to approve (at once), a transfer reaching its ACH cut-off or
        completing, queued orders filling at the next open, a day order expiring at its close, and
        sale proceeds settling (nothing is written then, withdrawable cash follows the settle date,
        but the balances change).
        """
        now = self.clock.now()
        moments: list[dt.datetime] = []
        if self.db.fetchone("SELECT id FROM paper_accounts WHERE status = 'SUBMITTED' LIMIT 1"):
            moments.append(now)
        transfer = self.db.fetchone(
            "SELECT MIN(CASE WHEN status = 'QUEUED' THEN sent_at ELSE complete_at END) AS at"
            " FROM paper_transfers WHERE status IN ('QUEUED', 'SENT_TO_CLEARING')"
        )
        if transfer and transfer["at"] is not None:
            moments.append(paper_rows.when(transfer["at"]))  # type: ignore[arg-type]
        orders = self.db.fetchall(
            "SELECT type, time_in_force, session FROM paper_orders WHERE status IN ('new', 'accepted')"
        )
        is_open = self.clock.is_open()
        if orders and not is_open:
            moments.append(rules.next_open_after(now))
        moments.extend(at for at in map(_expires_at, orders) if at is not None)
        settling = self.db.fetchone(
            "SELECT MIN(settle_date) AS day FROM paper_fills WHERE side = 'sell' AND settle_date > ?",
            (rules.new_york_date(now).isoformat(),),
        )
        if settling and settling["day"] is not None:
            moments.append(rules.settles_at(dt.date.fromisoformat(settling["day"])))
        return NextDue(min(moments, default=None), waiting_on_prices=bool(orders) and is_open)

    @_ledger_errors
    def process_due(self) -> list[str]:
        """Applies every due step on every account; returns the accounts whose holdings changed.

        Reads apply due steps lazily; a call when `next_due` says so is what makes a deposit
        landing or a queued order filling at the open reach the live portfolio without anyone
        reading the account. Three queries find the candidates, so an idle ledger costs little.
        """
        now = self.clock.now()
        ts = _ts(now)
        candidates = {
            r["id"] for r in self.db.fetchall("SELECT id FROM paper_accounts WHERE status = 'SUBMITTED'")
        }
        candidates.update(
            r["account_id"]
            for r in self.db.fetchall(
                "SELECT DISTINCT account_id FROM paper_transfers WHERE status IN ('QUEUED', 'SENT_TO_CLEARING')"
                " AND (complete_at <= ? OR (status = 'QUEUED' AND sent_at <= ?))",
                (ts, ts),
            )
        )
        is_open = self.clock.is_open()
        candidates.update(
            r["account_id"]
            for r in self.db.fetchall(
                "SELECT account_id, type, time_in_force, session FROM paper_orders WHERE status IN ('new', 'accepted')"
            )
            if is_open or _expired(r, now)
        )
        changed: set[str] = set()
        for account_id in sorted(candidates):
            changed |= self._sync(account_id)
        return sorted(changed)

    def _sync(self, account_id: str) -> set[str]:
        """Takes the lock only when something is due, so plain reads stay cheap."""
        row = self._account_row(account_id)
        if not self._is_due(row, self.clock.now()):
            return set()
        with self._locked(account_id) as a:
            pass
        return a.changed

    def _is_due(self, row: Row, now: dt.datetime) -> bool:
        if row["status"] == "SUBMITTED":
            return True
        ts = _ts(now)
        if self.db.fetchone(
            "SELECT id FROM paper_transfers WHERE account_id = ? AND status IN ('QUEUED', 'SENT_TO_CLEARING')"
            " AND (complete_at <= ? OR (status = 'QUEUED' AND sent_at <= ?))",
            (row["id"], ts, ts),
        ):
            return True
        orders = self.db.fetchall(
            "SELECT type, time_in_force, session FROM paper_orders"
            " WHERE account_id = ? AND status IN ('new', 'accepted')",
            (row["id"],),
        )
        if orders and self.clock.is_open():
            return True
        return any(_expired(o, now) for o in orders)

    def _advance(self, a: _Locked) -> None:
        if a.status == "SUBMITTED":
            self._set_status(a, "APPROVED", "application checks passed")
            self._set_status(a, "ACTIVE", "account opened")
            a.changed.add(a.id)
        now = _ts(a.now)
        for t in self.db.fetchall(
            "SELECT * FROM paper_transfers WHERE account_id = ? AND status IN ('QUEUED', 'SENT_TO_CLEARING')"
            " ORDER BY created_at, id",
            (a.id,),
        ):
            if now >= t["complete_at"]:
                self.db.execute(
                    "UPDATE paper_transfers SET status = 'COMPLETE', updated_at = ?, completed_at = ? WHERE id = ?",
                    (now, t["complete_at"], t["id"]),
                )
                if t["direction"] == "INCOMING":
                    self._set_cash(a, a.cash + Decimal(t["amount"]))
                a.changed.add(a.id)
            elif t["status"] == "QUEUED" and now >= t["sent_at"]:
                self.db.execute(
                    "UPDATE paper_transfers SET status = 'SENT_TO_CLEARING', updated_at = ? WHERE id = ?",
                    (now, t["id"]),
                )
        for o in self.db.fetchall(
            "SELECT * FROM paper_orders WHERE account_id = ? AND status IN ('new', 'accepted')"
            " ORDER BY created_at, id",
            (a.id,),
        ):
            if _expired(o, a.now):
                self._set_order_status(o["id"], "expired", a.now)
                continue
            if not a.is_open:
                continue
            last = self._quiet_price(o["symbol"])
            if last is None:
                continue  # no price yet: the order waits for one
            price = rules.to_price(last.last)
            if not _marketable(o, price):
                if o["status"] == "accepted":
                    self._set_order_status(o["id"], "new", a.now)
                continue
            refusal = self._execute(a, o, price)
            if refusal is not None:
                self._set_order_status(o["id"], "rejected", a.now, reason=refusal.message)

    # ======================================================================================
    # the ledger
    # ======================================================================================
    def _reserve_for(self, a: _Locked, req: rules.OrderInput, price: Decimal) -> Decimal:
        """What the new order sets aside, after checking it is there to set aside."""
        basis = req.limit_price if req.limit_price is not None else price
        if req.qty is not None and req.qty * basis < rules.MIN_NOTIONAL:
            whole = req.side == "sell" and req.qty == self._position_qty(a.id, req.symbol)
            if not whole:  # selling all of a position worth under $1 is how dust leaves the account
                raise Rejected(
                    f"order value {rules.cents(req.qty * basis)} is under the ${rules.MIN_NOTIONAL} minimum",
                    code="below_minimum",
                )
        if req.side == "buy":
            need = req.notional if req.notional is not None else rules.cents(req.qty * basis)  # type: ignore[operator]
            power = a.cash - self._open_buy_reserves(a.id)
            if need > power:
                raise Rejected(
                    f"insufficient buying power: the order needs {need}, {max(power, ZERO)} available",
                    code="insufficient_buying_power",
                )
            return need
        qty = req.qty if req.qty is not None else rules.shares_down(req.notional / price)  # type: ignore[operator]
        available = self._position_qty(a.id, req.symbol) - self._open_sell_reserves(a.id).get(req.symbol, ZERO)
        if available <= 0:
            raise Rejected(f"no {req.symbol} position to sell (short selling is not allowed)", code="no_position")
        if qty > available:
            raise Rejected(
                f"insufficient qty: selling {qty} {req.symbol}, {available} available", code="insufficient_qty"
            )
        return qty

    def _execute(self, a: _Locked, order: Row, price: Decimal) -> Rejected | None:
        """Fills `order` at `price`, or says why it cannot (without writing anything)."""
        symbol, side = order["symbol"], order["side"]
        qty = paper_rows.decimal_or_none(order["qty"])
        if qty is None:
            qty = rules.shares_down(Decimal(order["notional"]) / price)
            if qty <= 0:
                return Rejected(f"notional is too small to buy a fraction of {symbol} at {price}", code="too_small")
        amount = rules.cents(qty * price)
        session = rules.current_session(a.now)
        day_trade = False
        if side == "buy":
            power = a.cash - self._open_buy_reserves(a.id, excluding=order["id"])
            if amount > power:
                return Rejected(
                    f"insufficient buying power: {amount} needed, {max(power, ZERO)} available",
                    code="insufficient_buying_power",
                )
        else:
            held = self._position_qty(a.id, symbol)
            other = self._open_sell_reserves(a.id, excluding=order["id"]).get(symbol, ZERO)
            if qty > held - other:
                return Rejected(
                    f"insufficient qty: selling {qty} {symbol}, {max(held - other, ZERO)} held", code="insufficient_qty"
                )
            day_trade = (
                self.db.fetchone(
                    "SELECT id FROM paper_fills WHERE account_id = ? AND symbol = ? AND side = 'buy' AND session = ?",
                    (a.id, symbol, session.isoformat()),
                )
                is not None
            )
            if day_trade and self.pdt_enabled:
                count = self._day_trades(a.id, session)
                if count >= self.pdt_max_day_trades:
                    equity = self._equity(a.id, a.cash)
                    if equity < self.pdt_equity_threshold:
                        return Rejected(
                            f"pattern day trader rule: {count} day trades in the last 5 trading days and"
                            f" equity {equity} is under {self.pdt_equity_threshold}",
                            code="pdt_rule",
                        )
        self._apply_fill(a, order, qty, price, amount, session, day_trade)
        return None

    def _apply_fill(
        self, a: _Locked, order: Row, qty: Decimal, price: Decimal, amount: Decimal, session: dt.date, day_trade: bool
    ) -> None:
        symbol, side = order["symbol"], order["side"]
        pos = self.db.fetchone(
            "SELECT qty, cost_basis FROM paper_positions WHERE account_id = ? AND symbol = ?", (a.id, symbol)
        )
        held = Decimal(pos["qty"]) if pos else ZERO
        cost = Decimal(pos["cost_basis"]) if pos else ZERO
        if side == "buy":
            new_qty, new_cost = held + qty, cost + amount
            self._set_cash(a, a.cash - amount)
        else:
            removed = cost if qty == held else rules.cents(cost * qty / held)
            new_qty, new_cost = held - qty, cost - removed
            self._set_cash(a, a.cash + amount)
        if pos is None:
            self.db.execute(
                "INSERT INTO paper_positions (account_id, symbol, qty, cost_basis) VALUES (?, ?, ?, ?)",
                (a.id, symbol, str(new_qty), str(new_cost)),
            )
        elif new_qty == 0:
            self.db.execute("DELETE FROM paper_positions WHERE account_id = ? AND symbol = ?", (a.id, symbol))
        else:
            self.db.execute(
                "UPDATE paper_positions SET qty = ?, cost_basis = ? WHERE account_id = ? AND symbol = ?",
                (str(new_qty), str(new_cost), a.id, symbol),
            )
        now = _ts(a.now)
        last = self.db.fetchone("SELECT COALESCE(MAX(seq), 0) AS seq FROM paper_fills WHERE account_id = ?", (a.id,))
        self.db.execute(
            "INSERT INTO paper_fills (id, account_id, order_id, symbol, side, qty, price, amount, session,"
            " settle_date, day_trade, filled_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _new_id(), a.id, order["id"], symbol, side, str(qty), str(price), str(amount), session.isoformat(),
                rules.settle_date(session).isoformat(), int(day_trade), now, int(last["seq"] if last else 0) + 1,
            ),
        )
        self.db.execute(
            "UPDATE paper_orders SET status = 'filled', filled_qty = ?, filled_avg_price = ?, reserve = '0',"
            " updated_at = ?, filled_at = ? WHERE id = ?",
            (str(qty), str(price), now, now, order["id"]),
        )
        a.changed.add(a.id)

    # ======================================================================================
    # reads and small helpers
    # ======================================================================================
    @contextlib.contextmanager
    def _locked(self, account_id: str) -> Iterator[_Locked]:
        """A transaction holding the account row, with due steps applied first; announces changes after commit."""
        with self.db.transaction():
            row = self.db.fetchone(
                "SELECT id, status, cash FROM paper_accounts WHERE id = ?" + self.db.for_update(), (account_id,)
            )
            if row is None:
                raise NotFound(f"account {account_id} not found", code="account_not_found")
            a = _Locked(row["id"], row["status"], Decimal(row["cash"]), self.clock.now(), self.clock.is_open())
            self._advance(a)
            yield a
        self._notify(a.changed)

    def _notify(self, account_ids: Collection[str]) -> None:
        if account_ids and self.on_change is not None:
            try:
                self.on_change(sorted(account_ids))
            except Exception:  # the ledger change is committed; a failed announcement must not undo the reply
                log.exception("on_change hook failed for %s", sorted(account_ids))

    def _account_row(self, account_id: str) -> Row:
        row = self.db.fetchone("SELECT * FROM paper_accounts WHERE id = ?", (account_id,))
        if row is None:
            raise NotFound(f"account {account_id} not found", code="account_not_found")
        return row

    def _order_row(self, account_id: str, order_id: str) -> Row:
        row = self.db.fetchone("SELECT * FROM paper_orders WHERE id = ? AND account_id = ?", (order_id, account_id))
        if row is None:
            raise NotFound(f"order {order_id} not found", code="order_not_found")
        return row

    def _require_active(self, a: _Locked) -> None:
        if a.status != "ACTIVE":
            raise Rejected(f"account is {a.status}", code="account_not_active")

    def _set_cash(self, a: _Locked, cash: Decimal) -> None:
        cash = rules.cents(cash)
        if cash < 0:  # a guard on the guards: every path checks funds before it gets here
            raise Rejected("the ledger refused a change that would make cash negative", code="insufficient_funds")
        a.cash = cash
        self.db.execute(
            "UPDATE paper_accounts SET cash = ?, updated_at = ? WHERE id = ?", (str(cash), _ts(a.now), a.id)
        )
        a.changed.add(a.id)

    def _set_status(self, a: _Locked, status: str, note: str) -> None:
        a.status = status
        self.db.execute(
            "UPDATE paper_accounts SET status = ?, updated_at = ? WHERE id = ?", (status, _ts(a.now), a.id)
        )
        self._event(a.id, status, a.now, note)

    def _event(self, account_id: str, status: str, now: dt.datetime, note: str) -> None:
        self.db.execute(
            "INSERT INTO paper_account_events (account_id, status, at, note) VALUES (?, ?, ?, ?)",
            (account_id, status, _ts(now), note),
        )

    def _set_order_status(self, order_id: str, status: str, now: dt.datetime, reason: str | None = None) -> None:
        released = status not in OPEN_ORDER
        self.db.execute(
            "UPDATE paper_orders SET status = ?, reason = COALESCE(?, reason), updated_at = ?"
            + (", reserve = '0'" if released else "")
            + " WHERE id = ?",
            (status, reason, _ts(now), order_id),
        )

    def _open_buy_reserves(self, account_id: str, excluding: str | None = None) -> Decimal:
        rows = self.db.fetchall(
            "SELECT id, reserve FROM paper_orders WHERE account_id = ? AND side = 'buy'"
            " AND status IN ('new', 'accepted')",
            (account_id,),
        )
        return sum((Decimal(r["reserve"]) for r in rows if r["id"] != excluding), ZERO)

    def _open_sell_reserves(self, account_id: str, excluding: str | None = None) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for r in self.db.fetchall(
            "SELECT id, symbol, reserve FROM paper_orders WHERE account_id = ? AND side = 'sell'"
            " AND status IN ('new', 'accepted')",
            (account_id,),
        ):
            if r["id"] != excluding:
                out[r["symbol"]] = out.get(r["symbol"], ZERO) + Decimal(r["reserve"])
        return out

    def _position_qty(self, account_id: str, symbol: str) -> Decimal:
        row = self.db.fetchone(
            "SELECT qty FROM paper_positions WHERE account_id = ? AND symbol = ?", (account_id, symbol)
        )
        return Decimal(row["qty"]) if row else ZERO

    def _day_trades(self, account_id: str, session: dt.date) -> int:
        row = self.db.fetchone(
            "SELECT COUNT(*) AS n FROM paper_fills WHERE account_id = ? AND day_trade = 1 AND session >= ?"
            " AND session <= ?",
            (account_id, rules.pdt_window(session).isoformat(), session.isoformat()),
        )
        return int(row["n"]) if row else 0

    def _quiet_price(self, symbol: str) -> LastPrice | None:
        """A price for valuation: an unreachable price store degrades to 'unknown' instead of failing a read."""
        try:
            return self.prices.last(symbol)
        except Unavailable:
            return None

    def _equity(self, account_id: str, cash: Decimal) -> Decimal:
        total = cash
        for r in self.db.fetchall("SELECT * FROM paper_positions WHERE account_id = ?", (account_id,)):
            last = self._quiet_price(r["symbol"])
            total += Decimal(r["qty"]) * rules.to_price(last.last) if last else Decimal(r["cost_basis"])
        return rules.cents(total)

    def _unsettled(self, account_id: str, now: dt.datetime) -> Decimal:
        rows = self.db.fetchall(
            "SELECT amount FROM paper_fills WHERE account_id = ? AND side = 'sell' AND settle_date > ?",
            (account_id, rules.new_york_date(now).isoformat()),
        )
        return sum((Decimal(r["amount"]) for r in rows), ZERO)

    def _withdrawable(self, a: _Locked) -> Decimal:
        free = a.cash - self._unsettled(a.id, a.now) - self._open_buy_reserves(a.id)
        return max(free, ZERO)

    def _closure_blockers(self, a: _Locked) -> list[str]:
        problems = []
        if self.db.fetchone("SELECT symbol FROM paper_positions WHERE account_id = ?", (a.id,)):
            problems.append("positions are still open")
        if self.db.fetchone(
            "SELECT id FROM paper_orders WHERE account_id = ? AND status IN ('new', 'accepted')", (a.id,)
        ):
            problems.append("orders are still open")
        if a.cash > rules.CLOSE_ACCOUNT_MAX_CASH:
            problems.append(f"cash {a.cash} is above {rules.CLOSE_ACCOUNT_MAX_CASH}")
        if self.db.fetchone(
            "SELECT id FROM paper_transfers WHERE account_id = ? AND direction = 'INCOMING'"
            " AND status IN ('QUEUED', 'SENT_TO_CLEARING')",
            (a.id,),
        ):
            problems.append("a deposit is still in flight")
        return problems

    def _account_view(self, row: Row, now: dt.datetime) -> BrokerAccount:
        """Balances as Alpaca reports them; `last_equity` is rebuilt from today's flows and previous closes."""
        account_id = row["id"]
        cash = Decimal(row["cash"])
        flows = self._today(account_id, now)
        held = {
            r["symbol"]: (Decimal(r["qty"]), Decimal(r["cost_basis"]))
            for r in self.db.fetchall("SELECT * FROM paper_positions WHERE account_id = ?", (account_id,))
        }
        equity, last_equity = cash, cash - flows.fills_cash - flows.transfers
        for symbol in sorted(set(held) | set(flows.bought)):
            qty, cost = held.get(symbol, (ZERO, ZERO))
            start_qty = qty - flows.bought.get(symbol, ZERO)
            last = self._quiet_price(symbol)
            if last is not None:
                equity += qty * rules.to_price(last.last)
                prev = rules.to_price(last.prev_close if last.prev_close > 0 else last.last)
            else:
                equity += cost
                prev = cost / qty if qty else ZERO
            last_equity += start_qty * prev
        session = dt.date.fromisoformat(flows.session)
        reserves = self._open_buy_reserves(account_id)
        day_trades = self._day_trades(account_id, session)
        return BrokerAccount(
            id=account_id,
            account_number=row["account_number"],
            status=row["status"],
            created_at=paper_rows.when(row["created_at"]),  # type: ignore[arg-type]
            email=row["email"],
            owner_name=row["owner_name"],
            cash=cash,
            cash_withdrawable=max(cash - self._unsettled(account_id, now) - reserves, ZERO),
            equity=rules.cents(equity),
            last_equity=rules.cents(last_equity),
            buying_power=max(cash - reserves, ZERO),
            pattern_day_trader=self.pdt_enabled and day_trades > self.pdt_max_day_trades,
            daytrade_count=day_trades,
        )

    def _today(self, account_id: str, now: dt.datetime) -> "TodayFlows":
        """Cash and shares moved during the current session: what turns holdings into start-of-day holdings."""
        session = rules.current_session(now).isoformat()
        bought: dict[str, Decimal] = {}
        net_cost: dict[str, Decimal] = {}
        for f in self.db.fetchall(
            "SELECT symbol, side, qty, amount FROM paper_fills WHERE account_id = ? AND session = ?",
            (account_id, session),
        ):
            sign = 1 if f["side"] == "buy" else -1
            bought[f["symbol"]] = bought.get(f["symbol"], ZERO) + sign * Decimal(f["qty"])
            net_cost[f["symbol"]] = net_cost.get(f["symbol"], ZERO) + sign * Decimal(f["amount"])
        transfers = ZERO
        for t in self.db.fetchall(
            "SELECT direction, status, amount FROM paper_transfers WHERE account_id = ? AND session = ?",
            (account_id, session),
        ):
            if t["direction"] == "INCOMING" and t["status"] == "COMPLETE":
                transfers += Decimal(t["amount"])
            elif t["direction"] == "OUTGOING" and t["status"] not in VOID_TRANSFER:
                transfers -= Decimal(t["amount"])
        return TodayFlows(session, bought, net_cost, transfers)

    # --- application ----------------------------------------------------------------------
    def _check_application(self, application: AccountApplication) -> AccountApplication:
        try:
            app = msgspec.convert(msgspec.to_builtins(application), AccountApplication)
        except (msgspec.ValidationError, TypeError) as exc:
            raise InvalidRequest(f"invalid account application: {exc}") from None
        problems = []
        today = dt.date.today()  # age is a real-world fact, not a replayed one
        dob = app.identity.date_of_birth
        age = today.year - dob.year - ((today.month, today.day) < (dob.month, dob.day))
        if age < 18:
            problems.append("the applicant must be at least 18 years old")
        if age > 130:
            problems.append("date_of_birth is not plausible")
        if not app.identity.given_name.strip() or not app.identity.family_name.strip():
            problems.append("given_name and family_name must not be blank")
        if not any(a.agreement == "customer_agreement" for a in app.agreements):
            problems.append("the customer_agreement must be signed")
        if problems:
            raise InvalidRequest("invalid account application: " + "; ".join(problems), details=problems)
        return app


@dataclass(frozen=True)
class TodayFlows:
    """Movements of the current session: net shares bought and net cost (buys minus sells) per
    symbol, negative when net sold, and the cash transfers moved in (+) or out (-)."""

    session: str
    bought: dict[str, Decimal]
    net_cost: dict[str, Decimal]
    transfers: Decimal

    @property
    def fills_cash(self) -> Decimal:
        return -sum(self.net_cost.values(), ZERO)


def _marketable(order: Row, price: Decimal) -> bool:
    if order["type"] != "limit":
        return True
    limit = Decimal(order["limit_price"])
    return price <= limit if order["side"] == "buy" else price >= limit


def _expires_at(order: Row) -> dt.datetime | None:
    """Day limit orders end with their session; market orders wait for the next open however late."""
    if order["type"] != "limit" or order["time_in_force"] != "day":
        return None
    return rules.session_close(dt.date.fromisoformat(order["session"]))


def _expired(order: Row, now: dt.datetime) -> bool:
    expires = _expires_at(order)
    return expires is not None and now >= expires


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def newest_record(db: Database) -> dt.datetime | None:
    """The latest market moment the ledger recorded anything at (None for an empty ledger): a restarted
    paper world's clock must not start before it, or its history would lie in its future."""
    db.migrate(COMPONENT, STEPS)
    row = db.fetchone(
        "SELECT MAX(t) AS t FROM ("
        " SELECT MAX(updated_at) AS t FROM paper_accounts UNION ALL SELECT MAX(updated_at) FROM paper_transfers"
        " UNION ALL SELECT MAX(updated_at) FROM paper_orders UNION ALL SELECT MAX(filled_at) FROM paper_fills"
        ") AS times"
    )
    return None if row is None else paper_rows.when(row["t"])
