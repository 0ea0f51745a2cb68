"""Sessions on one account of the paper ledger: lock and load it, bring it up to the clock, write decisions.

A session is one transaction holding the account's row (`BEGIN IMMEDIATE` on SQLite, `SELECT ...
FOR UPDATE` on PostgreSQL). It loads the account as a `paper_ledger.Book`, applies every step that
has fallen due (approval, transfer steps, open orders filling or expiring) and keeps the book
current as it writes, so each rule sees the account as the transaction left it. The accounts a
session changed are announced to `on_change` after it commits. `next_due` and `process_due` are
the same steps seen from the whole ledger: when the next one falls due, and applying them all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal

from brokerage import paper_ledger as ledger
from brokerage import paper_rows
from brokerage import paper_rules as rules
from brokerage import paper_views as views
from brokerage.errors import Rejected, Unavailable
from brokerage.paper_ledger import Book, OrderTerms
from brokerage.paper_tables import LedgerTables, order_terms
from brokerage.prices import PriceReader
from brokerage.sql import Database, Row
from engine.clock import Clock
from engine.types import LastPrice

log = logging.getLogger(__name__)

OnChange = Callable[[list[str]], None]


@dataclass
class AccountSession:
    """One account held under lock for the length of a transaction, its book kept current."""

    book: Book
    now: dt.datetime
    is_open: bool
    changed: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.book.id


@dataclass(frozen=True)
class NextDue:
    """When the ledger next changes by itself.

    `at` is the market time of the earliest time-driven step, None when none is pending (already
    past when a step is due). `waiting_on_prices` is true while orders are open during the session:
    they fill when the price lets them, at no moment known in advance.
    """

    at: dt.datetime | None
    waiting_on_prices: bool


class LedgerSessions:
    def __init__(
        self, db: Database, clock: Clock, prices: PriceReader, pdt: ledger.Pdt, on_change: OnChange | None
    ) -> None:
        self.db = db
        self.tables = LedgerTables(db)
        self.clock = clock
        self.prices = prices
        self.pdt = pdt
        self.on_change = on_change

    def next_due(self) -> NextDue:
        """When `process_due` next has work, so its caller can sleep until then instead of polling."""
        now = self.clock.now()
        orders = [o for _, o in self.tables.all_open_orders()]
        is_open = self.clock.is_open()
        at = views.next_due(
            now,
            application_waiting=self.tables.application_waiting(),
            next_transfer_step=self.tables.next_transfer_step(),
            open_orders=bool(orders),
            order_expiries=map(ledger.expires_at, orders),
            is_open=is_open,
            next_settlement=self.tables.next_settlement(rules.new_york_date(now)),
        )
        return NextDue(at, waiting_on_prices=bool(orders) and is_open)

    def process_due(self) -> list[str]:
        """Applies every due step on every account; returns the accounts whose holdings changed.

        Reads apply due steps lazily; a call when `next_due` says so is what makes a deposit
        landing or a queued order filling at the open reach the live portfolio without anyone
        reading the account. Three queries find the candidates, so an idle ledger costs little.
        """
        now = self.clock.now()
        candidates = self.tables.accounts_with_steps(now)
        is_open = self.clock.is_open()
        candidates.update(acct for acct, o in self.tables.all_open_orders() if is_open or ledger.expired(o, now))
        changed: set[str] = set()
        for account_id in sorted(candidates):
            changed |= self.apply_due_steps(account_id)
        return sorted(changed)

    def sync(self, account_id: str) -> None:
        """Brings the account up to the clock before a read; takes the lock only when something is due."""
        if self._is_due(self.tables.account(account_id), self.clock.now()):
            self.apply_due_steps(account_id)

    def apply_due_steps(self, account_id: str) -> set[str]:
        with self.db.transaction():
            a = self._load(account_id)
            self._advance(a)
        self.notify(a.changed)
        return a.changed

    def _is_due(self, row: Row, now: dt.datetime) -> bool:
        if row["status"] == "SUBMITTED" or self.tables.transfer_step_due(row["id"], now):
            return True
        orders = [order_terms(r) for r in self.tables.open_order_rows(row["id"])]
        return (bool(orders) and self.clock.is_open()) or any(ledger.expired(o, now) for o in orders)

    def _advance(self, a: AccountSession) -> None:
        """Every step due on this account: approval, transfer steps, then its open orders in turn."""
        if a.book.status == "SUBMITTED":
            self.set_status(a, "APPROVED", "application checks passed")
            self.set_status(a, "ACTIVE", "account opened")
            a.changed.add(a.id)
        for t in self.tables.pending_transfers(a.id):
            step = ledger.transfer_step(
                t["direction"], t["status"], Decimal(t["amount"]),
                paper_rows.instant(t["sent_at"]), paper_rows.instant(t["complete_at"]), a.now,
            )
            if step is None:
                continue
            completed = step.status == "COMPLETE"
            self.tables.set_transfer_status(t["id"], step.status, a.now, t["complete_at"] if completed else None)
            if step.cash_delta:
                self.set_cash(a, a.book.cash + step.cash_delta)
            if completed:
                a.changed.add(a.id)
        for row in self.tables.open_order_rows(a.id):
            order = order_terms(row)
            last = self.quiet_price(order.symbol) if a.is_open else None
            price = rules.to_price(last.last) if last else None
            action = ledger.order_step(order, a.now, a.is_open, price)
            if action == "expire":
                self.close_order(a, order.id, "expired")
            elif action == "rest" and order.status == "accepted":
                self.tables.set_order_status(order.id, "new", a.now)
            elif action == "fill":
                assert price is not None
                refusal = self.fill(a, order, price)
                if refusal is not None:
                    self.close_order(a, order.id, "rejected", reason=refusal.message)

    # --- applying decisions -----------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, account_id: str) -> Iterator[AccountSession]:
        """A transaction holding the account, its due steps applied first; announces changes after commit."""
        with self.db.transaction():
            a = self._load(account_id)
            self._advance(a)
            yield a
        self.notify(a.changed)

    def _load(self, account_id: str) -> AccountSession:
        now = self.clock.now()
        row = self.tables.lock_account(account_id)
        book = self.tables.book(row, rules.current_session(now), self.pdt.enabled)
        return AccountSession(book, now, self.clock.is_open())

    def fill(self, a: AccountSession, order: OrderTerms, price: Decimal) -> Rejected | None:
        session = rules.current_session(a.now)
        outcome = ledger.plan_fill(a.book, order, price, session, self.pdt, lambda: self._equity(a.book))
        if isinstance(outcome, Rejected):
            return outcome
        self.tables.write_fill(a.id, outcome, a.now)
        a.book = ledger.after_fill(a.book, outcome)
        a.changed.add(a.id)
        return None

    def close_order(self, a: AccountSession, order_id: str, status: str, reason: str | None = None) -> None:
        self.tables.set_order_status(order_id, status, a.now, reason)
        a.book = replace(a.book, open_orders=tuple(o for o in a.book.open_orders if o.id != order_id))

    def set_cash(self, a: AccountSession, cash: Decimal) -> None:
        cash = ledger.checked_cash(cash)
        self.tables.set_cash(a.id, cash, a.now)
        a.book = replace(a.book, cash=cash)
        a.changed.add(a.id)

    def set_status(self, a: AccountSession, status: str, note: str) -> None:
        self.tables.set_status(a.id, status, a.now, note)
        a.book = replace(a.book, status=status)

    def notify(self, account_ids: Collection[str]) -> None:
        if account_ids and self.on_change is not None:
            try:
                self.on_change(sorted(account_ids))
            except Exception:  # the ledger change is committed; a failed announcement must not undo the reply
                log.exception("on_change hook failed for %s", sorted(account_ids))

    # --- prices -----------------------------------------------------------------------------
    def quiet_price(self, symbol: str) -> LastPrice | None:
        """A price for valuation: an unreachable price store degrades to 'unknown' instead of failing a read."""
        try:
            return self.prices.last(symbol)
        except Unavailable:
            return None

    def quiet_prices(self, symbols: Iterable[str]) -> views.Prices:
        return {symbol: self.quiet_price(symbol) for symbol in symbols}

    def _equity(self, book: Book) -> Decimal:
        return views.equity(book.cash, book.holdings, self.quiet_prices(book.holdings))
