"""The paper ledger's tables: load and lock rows, write the changes the money rules decided.

Every query of the ledger lives here, so `brokerage.paper` reads as the sequence of a request
(lock, load, decide with `brokerage.paper_ledger`, apply) and the SQL can be read on its own. The
status sets are written once (`OPEN`, `PENDING`) from the core's constants.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from brokerage import paper_rules as rules
from brokerage.errors import NotFound
from brokerage.paper_ledger import (
    CLOSED,
    OPEN_ORDER,
    PENDING_TRANSFER,
    Book,
    Fill,
    Holding,
    OpenOrder,
    OrderTerms,
)
from brokerage.paper_rows import decimal_or_none, instant
from brokerage.sql import Database, Row


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


OPEN = "status IN " + _in(OPEN_ORDER)
PENDING = "status IN " + _in(PENDING_TRANSFER)
# a pending transfer whose next step has come: completion, or its ACH cut-off while still queued
_TRANSFER_DUE = PENDING + " AND (complete_at <= ? OR (status = 'QUEUED' AND sent_at <= ?))"


def ts(moment: dt.datetime) -> float:
    return moment.timestamp()


def new_id() -> str:
    return str(uuid.uuid4())


def order_terms(row: Row) -> OrderTerms:
    return OrderTerms(
        id=row["id"],
        symbol=row["symbol"],
        side=row["side"],
        type=row["type"],
        time_in_force=row["time_in_force"],
        session=dt.date.fromisoformat(row["session"]),
        status=row["status"],
        qty=decimal_or_none(row["qty"]),
        notional=decimal_or_none(row["notional"]),
        limit_price=decimal_or_none(row["limit_price"]),
    )


class LedgerTables:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- accounts ---------------------------------------------------------------------------
    def lock_account(self, account_id: str) -> Row:
        """The account's row, locked until the transaction ends (SQLite holds the file instead)."""
        row = self.db.fetchone(
            "SELECT id, status, cash FROM paper_accounts WHERE id = ?" + self.db.for_update(), (account_id,)
        )
        if row is None:
            raise NotFound(f"account {account_id} not found", code="account_not_found")
        return row

    def account(self, account_id: str) -> Row:
        row = self.db.fetchone("SELECT * FROM paper_accounts WHERE id = ?", (account_id,))
        if row is None:
            raise NotFound(f"account {account_id} not found", code="account_not_found")
        return row

    def account_id_by_email(self, email: str) -> str | None:
        row = self.db.fetchone("SELECT id FROM paper_accounts WHERE email = ?", (email,))
        return None if row is None else str(row["id"])

    def account_ids(self, include_closed: bool) -> list[str]:
        sql = "SELECT id FROM paper_accounts" + ("" if include_closed else " WHERE status <> ?") + " ORDER BY id"
        return [r["id"] for r in self.db.fetchall(sql, () if include_closed else (CLOSED,))]

    def insert_account(
        self, account_id: str, number: str, email: str, owner: str, application: str, now: dt.datetime
    ) -> None:
        self.db.execute(
            "INSERT INTO paper_accounts (id, account_number, status, email, owner_name, application,"
            " cash, created_at, updated_at) VALUES (?, ?, 'SUBMITTED', ?, ?, ?, '0.00', ?, ?)",
            (account_id, number, email, owner, application, ts(now), ts(now)),
        )
        self.event(account_id, "SUBMITTED", now, "application received")

    def set_cash(self, account_id: str, cash: Decimal, now: dt.datetime) -> None:
        self.db.execute(
            "UPDATE paper_accounts SET cash = ?, updated_at = ? WHERE id = ?", (str(cash), ts(now), account_id)
        )

    def set_status(self, account_id: str, status: str, now: dt.datetime, note: str) -> None:
        self.db.execute(
            "UPDATE paper_accounts SET status = ?, updated_at = ? WHERE id = ?", (status, ts(now), account_id)
        )
        self.event(account_id, status, now, note)

    def event(self, account_id: str, status: str, now: dt.datetime, note: str) -> None:
        self.db.execute(
            "INSERT INTO paper_account_events (account_id, status, at, note) VALUES (?, ?, ?, ?)",
            (account_id, status, ts(now), note),
        )

    def book(self, row: Row, session: dt.date, count_day_trades: bool) -> Book:
        """One account as the money rules need it; the day-trade count only when the PDT rule is on."""
        account_id = row["id"]
        bought = self.db.fetchall(
            "SELECT DISTINCT symbol FROM paper_fills WHERE account_id = ? AND side = 'buy' AND session = ?",
            (account_id, session.isoformat()),
        )
        return Book(
            id=account_id,
            status=row["status"],
            cash=Decimal(row["cash"]),
            holdings=self.holdings(account_id),
            open_orders=tuple(
                OpenOrder(r["id"], r["symbol"], r["side"], Decimal(r["reserve"]))
                for r in self.db.fetchall(
                    "SELECT id, symbol, side, reserve FROM paper_orders WHERE account_id = ? AND " + OPEN,
                    (account_id,),
                )
            ),
            bought_this_session=frozenset(r["symbol"] for r in bought),
            day_trades=self.day_trades(account_id, session) if count_day_trades else 0,
        )

    def holdings(self, account_id: str) -> dict[str, Holding]:
        return {
            r["symbol"]: Holding(Decimal(r["qty"]), Decimal(r["cost_basis"]))
            for r in self.db.fetchall(
                "SELECT symbol, qty, cost_basis FROM paper_positions WHERE account_id = ? ORDER BY symbol",
                (account_id,),
            )
        }

    def day_trades(self, account_id: str, session: dt.date) -> int:
        row = self.db.fetchone(
            "SELECT COUNT(*) AS n FROM paper_fills WHERE account_id = ? AND day_trade = 1 AND session >= ?"
            " AND session <= ?",
            (account_id, rules.pdt_window(session).isoformat(), session.isoformat()),
        )
        return int(row["n"]) if row else 0

    # --- bank links -------------------------------------------------------------------------
    def ach_rows(self, account_id: str) -> list[Row]:
        return self.db.fetchall("SELECT * FROM paper_ach WHERE account_id = ? ORDER BY created_at, id", (account_id,))

    def ach_row(self, account_id: str, relationship_id: str) -> Row:
        row = self.db.fetchone("SELECT * FROM paper_ach WHERE id = ? AND account_id = ?", (relationship_id, account_id))
        if row is None:
            raise NotFound(f"ACH relationship {relationship_id} not found", code="ach_not_found")
        return row

    def has_active_ach(self, account_id: str) -> bool:
        return self.db.fetchone(
            "SELECT id FROM paper_ach WHERE account_id = ? AND status <> 'CANCELED'", (account_id,)
        ) is not None

    def insert_ach(self, rel_id: str, account_id: str, now: dt.datetime, bank: dict[str, Any]) -> None:
        owner = self.account(account_id)["owner_name"]
        self.db.execute(
            "INSERT INTO paper_ach (id, account_id, status, owner_name, bank_account_type,"
            " bank_account_number, bank_routing_number, nickname, bank_name, processor_token,"
            " created_at, updated_at) VALUES (?, ?, 'APPROVED', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rel_id, account_id, owner, bank["bank_account_type"], bank["bank_account_number"],
                bank["bank_routing_number"], bank["nickname"], bank["bank_name"], bank["processor_token"],
                ts(now), ts(now),
            ),
        )

    def cancel_ach(self, relationship_id: str, now: dt.datetime) -> None:
        self.db.execute(
            "UPDATE paper_ach SET status = 'CANCELED', updated_at = ? WHERE id = ?", (ts(now), relationship_id)
        )

    # --- transfers --------------------------------------------------------------------------
    def transfer_row(self, account_id: str, transfer_id: str) -> Row:
        row = self.db.fetchone(
            "SELECT * FROM paper_transfers WHERE id = ? AND account_id = ?", (transfer_id, account_id)
        )
        if row is None:
            raise NotFound(f"transfer {transfer_id} not found", code="transfer_not_found")
        return row

    def transfer_rows(self, account_id: str, newest_first: bool = True) -> list[Row]:
        order = "created_at DESC, id" if newest_first else "created_at, id"
        return self.db.fetchall(f"SELECT * FROM paper_transfers WHERE account_id = ? ORDER BY {order}", (account_id,))

    def withdrawals_on(self, account_id: str, ach_day: str) -> list[tuple[Decimal, str]]:
        rows = self.db.fetchall(
            "SELECT amount, status FROM paper_transfers"
            " WHERE account_id = ? AND direction = 'OUTGOING' AND ach_day = ?",
            (account_id, ach_day),
        )
        return [(Decimal(r["amount"]), r["status"]) for r in rows]

    def insert_transfer(self, values: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO paper_transfers (id, account_id, relationship_id, amount, direction, status,"
            " ach_day, session, created_at, updated_at, sent_at, complete_at)"
            " VALUES (?, ?, ?, ?, ?, 'QUEUED', ?, ?, ?, ?, ?, ?)",
            tuple(values[k] for k in (
                "id", "account_id", "relationship_id", "amount", "direction", "ach_day", "session",
                "created_at", "created_at", "sent_at", "complete_at",
            )),
        )

    def pending_transfers(self, account_id: str) -> list[Row]:
        return self.db.fetchall(
            "SELECT * FROM paper_transfers WHERE account_id = ? AND " + PENDING + " ORDER BY created_at, id",
            (account_id,),
        )

    def set_transfer_status(
        self, transfer_id: str, status: str, now: dt.datetime, completed_at: float | None = None
    ) -> None:
        self.db.execute(
            "UPDATE paper_transfers SET status = ?, updated_at = ?, completed_at = COALESCE(?, completed_at)"
            " WHERE id = ?",
            (status, ts(now), completed_at, transfer_id),
        )

    def deposit_in_flight(self, account_id: str) -> bool:
        return self.db.fetchone(
            "SELECT id FROM paper_transfers WHERE account_id = ? AND direction = 'INCOMING' AND " + PENDING,
            (account_id,),
        ) is not None

    # --- orders and fills -------------------------------------------------------------------
    def order_row(self, account_id: str, order_id: str) -> Row:
        row = self.db.fetchone("SELECT * FROM paper_orders WHERE id = ? AND account_id = ?", (order_id, account_id))
        if row is None:
            raise NotFound(f"order {order_id} not found", code="order_not_found")
        return row

    def order_by_client_id(self, account_id: str, client_order_id: str) -> Row | None:
        return self.db.fetchone(
            "SELECT * FROM paper_orders WHERE account_id = ? AND client_order_id = ?", (account_id, client_order_id)
        )

    def order_rows(self, account_id: str) -> list[Row]:
        return self.db.fetchall(
            "SELECT * FROM paper_orders WHERE account_id = ? ORDER BY created_at DESC, id", (account_id,)
        )

    def open_order_rows(self, account_id: str) -> list[Row]:
        return self.db.fetchall(
            "SELECT * FROM paper_orders WHERE account_id = ? AND " + OPEN + " ORDER BY created_at, id", (account_id,)
        )

    def insert_order(
        self, order: OrderTerms, client_order_id: str, account_id: str, reserve: Decimal, now: dt.datetime
    ) -> None:
        self.db.execute(
            "INSERT INTO paper_orders (id, client_order_id, account_id, symbol, side, type, time_in_force,"
            " status, qty, notional, limit_price, reserve, filled_qty, session, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?, '0', ?, ?, ?)",
            (
                order.id, client_order_id, account_id, order.symbol, order.side, order.type, order.time_in_force,
                _s(order.qty), _s(order.notional), _s(order.limit_price), str(reserve), order.session.isoformat(),
                ts(now), ts(now),
            ),
        )

    def set_order_status(self, order_id: str, status: str, now: dt.datetime, reason: str | None = None) -> None:
        """A status that closes the order releases what it set aside."""
        released = status not in OPEN_ORDER
        self.db.execute(
            "UPDATE paper_orders SET status = ?, reason = COALESCE(?, reason), updated_at = ?"
            + (", reserve = '0'" if released else "")
            + " WHERE id = ?",
            (status, reason, ts(now), order_id),
        )

    def write_fill(self, account_id: str, fill: Fill, now: dt.datetime) -> None:
        """The position, the fill (numbered in the account's sequence), the order and the cash."""
        after = fill.holding_after
        if after.qty == 0:
            self.db.execute(
                "DELETE FROM paper_positions WHERE account_id = ? AND symbol = ?", (account_id, fill.symbol)
            )
        elif not self.db.execute(
            "UPDATE paper_positions SET qty = ?, cost_basis = ? WHERE account_id = ? AND symbol = ?",
            (str(after.qty), str(after.cost), account_id, fill.symbol),
        ):
            self.db.execute(
                "INSERT INTO paper_positions (account_id, symbol, qty, cost_basis) VALUES (?, ?, ?, ?)",
                (account_id, fill.symbol, str(after.qty), str(after.cost)),
            )
        last = self.db.fetchone(
            "SELECT COALESCE(MAX(seq), 0) AS seq FROM paper_fills WHERE account_id = ?", (account_id,)
        )
        self.db.execute(
            "INSERT INTO paper_fills (id, account_id, order_id, symbol, side, qty, price, amount, session,"
            " settle_date, day_trade, filled_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new_id(), account_id, fill.order_id, fill.symbol, fill.side, str(fill.qty), str(fill.price),
                str(fill.amount), fill.session.isoformat(), fill.settle_date.isoformat(), int(fill.day_trade),
                ts(now), int(last["seq"] if last else 0) + 1,
            ),
        )
        self.db.execute(
            "UPDATE paper_orders SET status = 'filled', filled_qty = ?, filled_avg_price = ?, reserve = '0',"
            " updated_at = ?, filled_at = ? WHERE id = ?",
            (str(fill.qty), str(fill.price), ts(now), ts(now), fill.order_id),
        )
        self.set_cash(account_id, fill.cash_after, now)

    def fill_rows(self, account_id: str) -> list[Row]:
        return self.db.fetchall("SELECT * FROM paper_fills WHERE account_id = ?", (account_id,))

    def unsettled(self, account_id: str, today: dt.date) -> Decimal:
        rows = self.db.fetchall(
            "SELECT amount FROM paper_fills WHERE account_id = ? AND side = 'sell' AND settle_date > ?",
            (account_id, today.isoformat()),
        )
        return sum((Decimal(r["amount"]) for r in rows), Decimal(0))

    def session_fills(self, account_id: str, session: str) -> list[tuple[str, str, Decimal, Decimal]]:
        rows = self.db.fetchall(
            "SELECT symbol, side, qty, amount FROM paper_fills WHERE account_id = ? AND session = ?",
            (account_id, session),
        )
        return [(r["symbol"], r["side"], Decimal(r["qty"]), Decimal(r["amount"])) for r in rows]

    def session_transfers(self, account_id: str, session: str) -> list[tuple[str, str, Decimal]]:
        rows = self.db.fetchall(
            "SELECT direction, status, amount FROM paper_transfers WHERE account_id = ? AND session = ?",
            (account_id, session),
        )
        return [(r["direction"], r["status"], Decimal(r["amount"])) for r in rows]

    def newest_record(self) -> dt.datetime | None:
        row = self.db.fetchone(
            "SELECT MAX(t) AS t FROM ("
            " SELECT MAX(updated_at) AS t FROM paper_accounts UNION ALL SELECT MAX(updated_at) FROM paper_transfers"
            " UNION ALL SELECT MAX(updated_at) FROM paper_orders UNION ALL SELECT MAX(filled_at) FROM paper_fills"
            ") AS times"
        )
        return None if row is None or row["t"] is None else instant(row["t"])

    # --- what is due ------------------------------------------------------------------------
    def application_waiting(self) -> bool:
        return self.db.fetchone("SELECT id FROM paper_accounts WHERE status = 'SUBMITTED' LIMIT 1") is not None

    def next_transfer_step(self) -> dt.datetime | None:
        row = self.db.fetchone(
            "SELECT MIN(CASE WHEN status = 'QUEUED' THEN sent_at ELSE complete_at END) AS at"
            " FROM paper_transfers WHERE " + PENDING
        )
        return instant(row["at"]) if row and row["at"] is not None else None

    def all_open_orders(self) -> list[tuple[str, OrderTerms]]:
        return [(r["account_id"], order_terms(r)) for r in self.db.fetchall("SELECT * FROM paper_orders WHERE " + OPEN)]

    def next_settlement(self, today: dt.date) -> dt.date | None:
        row = self.db.fetchone(
            "SELECT MIN(settle_date) AS day FROM paper_fills WHERE side = 'sell' AND settle_date > ?",
            (today.isoformat(),),
        )
        return dt.date.fromisoformat(row["day"]) if row and row["day"] is not None else None

    def accounts_with_steps(self, now: dt.datetime) -> set[str]:
        """Accounts with an application to approve or a transfer step that has come."""
        ids = {r["id"] for r in self.db.fetchall("SELECT id FROM paper_accounts WHERE status = 'SUBMITTED'")}
        ids.update(
            r["account_id"]
            for r in self.db.fetchall(
                "SELECT DISTINCT account_id FROM paper_transfers WHERE " + _TRANSFER_DUE, (ts(now), ts(now))
            )
        )
        return ids

    def transfer_step_due(self, account_id: str, now: dt.datetime) -> bool:
        return self.db.fetchone(
            "SELECT id FROM paper_transfers WHERE account_id = ? AND " + _TRANSFER_DUE, (account_id, ts(now), ts(now))
        ) is not None


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
