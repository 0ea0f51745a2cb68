"""What the paper ledger answers when asked: balances, positions, the activity log, the engine's holdings.

Reads take no lock (the caller first brings the account up to the clock with `LedgerSessions.sync`);
the numbers come from `brokerage.paper_views` over the rows `brokerage.paper_tables` loads.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from brokerage import paper_ledger as ledger
from brokerage import paper_rows
from brokerage import paper_rules as rules
from brokerage import paper_views as views
from brokerage.models import Activity, BrokerAccount, BrokerPosition
from brokerage.paper_ledger import CLOSED
from brokerage.paper_session import LedgerSessions
from engine.types import AccountHoldings


class LedgerReads:
    def __init__(self, sessions: LedgerSessions) -> None:
        self.sessions = sessions
        self.tables = sessions.tables

    def account(self, account_id: str) -> BrokerAccount:
        """Balances as Alpaca reports them."""
        row = self.tables.account(account_id)
        now = self.sessions.clock.now()
        flows = self._today(account_id, now)
        book = self.tables.book(row, dt.date.fromisoformat(flows.session), True)
        equity, last_equity = views.equity_and_last_equity(
            book.cash, book.holdings, flows, self.sessions.quiet_prices(set(book.holdings) | set(flows.bought))
        )
        reserves = book.buy_reserves()
        unsettled = self.tables.unsettled(account_id, rules.new_york_date(now))
        pdt = self.sessions.pdt
        return BrokerAccount(
            id=account_id,
            account_number=row["account_number"],
            status=row["status"],
            created_at=paper_rows.instant(row["created_at"]),
            email=row["email"],
            owner_name=row["owner_name"],
            cash=book.cash,
            cash_withdrawable=ledger.withdrawable(book.cash, unsettled, reserves),
            equity=equity,
            last_equity=last_equity,
            buying_power=max(book.cash - reserves, ledger.ZERO),
            pattern_day_trader=pdt.enabled and book.day_trades > pdt.max_day_trades,
            daytrade_count=book.day_trades,
        )

    def positions(self, account_id: str) -> list[BrokerPosition]:
        row = self.tables.account(account_id)
        book = self.tables.book(row, rules.current_session(self.sessions.clock.now()), False)
        return [
            views.broker_position(symbol, held, self.sessions.quiet_price(symbol), book.sell_reserve(symbol))
            for symbol, held in sorted(book.holdings.items())
        ]

    def activities(self, account_id: str) -> list[Activity]:
        """Fills (FILL), completed deposits (CSD) and withdrawals that left the account (CSW), newest first
        in exactly the reverse of the order the ledger applied them (`paper_views.activity_log`)."""
        fills = [(f["filled_at"], f["seq"], paper_rows.fill_activity(f)) for f in self.tables.fill_rows(account_id)]
        transfers = []
        for t in self.tables.transfer_rows(account_id, newest_first=False):
            amount = Decimal(t["amount"])
            if t["direction"] == "INCOMING" and t["status"] == "COMPLETE":
                at = t["completed_at"]
                transfers.append((at, paper_rows.transfer_activity(t, "CSD", amount, at, "ACH deposit")))
            elif t["direction"] == "OUTGOING" and t["status"] not in ledger.VOID_TRANSFER:
                at = t["created_at"]
                transfers.append((at, paper_rows.transfer_activity(t, "CSW", -amount, at, "ACH withdrawal")))
        return views.activity_log(fills, transfers)

    def holdings(self, account_id: str) -> AccountHoldings | None:
        """Holdings for the realtime engine (no price reads); None once closed. Same result as
        `brokerage.positions.holdings_from_activities` on this broker, in a few queries."""
        row = self.tables.account(account_id)
        if row["status"] == CLOSED:
            return None
        now = self.sessions.clock.now()
        flows = self._today(account_id, now)
        return AccountHoldings(
            account_id=account_id,
            cash=Decimal(row["cash"]),
            positions=views.session_positions(self.tables.holdings(account_id), flows),
            session=flows.session,
            deposits_today=flows.transfers,
            as_of=now.timestamp(),
        )

    def _today(self, account_id: str, now: dt.datetime) -> views.TodayFlows:
        session = rules.current_session(now).isoformat()
        return views.today_flows(
            session, self.tables.session_fills(account_id, session), self.tables.session_transfers(account_id, session)
        )
