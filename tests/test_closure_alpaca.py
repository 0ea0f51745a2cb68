"""The closure state machine against Alpaca's Broker API: `AlpacaBroker` (alpaca-py's BrokerClient over real
HTTP) on the spec-validating stand-in, whose timestamps follow the test's manual clock. The stand-in queues
market orders while the market is closed, settles sale proceeds at `end_of_day` (T+1), and moves transfers
through Alpaca's statuses only when the test says so; every request it answers is counted, so a close-all,
a withdrawal or a close sent twice shows. Nothing of the project is mocked."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from closure_support import MON, TUE, USER, WED, ny_morning
from paper_support import BANK, application
from standins.alpaca_broker_api import AlpacaBrokerStandIn, Spec

from brokerage.alpaca_broker import AlpacaBroker
from brokerage.closure.process import ClosureProcess
from brokerage.closure.records import ClosureRecord, ClosureStore
from brokerage.email import OutboxMailer
from brokerage.errors import Conflict, Rejected, Unavailable
from brokerage.models import OrderRequest
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine.clock import ManualClock
from engine.config import load_settings

KEY, SECRET = "PKCLOSURE", "closure-secret"
THU, FRI = WED + dt.timedelta(days=1), WED + dt.timedelta(days=2)
SAT, SUN, MLK = FRI + dt.timedelta(days=1), FRI + dt.timedelta(days=2), FRI + dt.timedelta(days=3)  # 2025-01-20
TUE2, WED2 = FRI + dt.timedelta(days=4), FRI + dt.timedelta(days=5)
EVENING = dt.timedelta(hours=8)  # 18:00 New York: the market is closed


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec.load()


@dataclass
class AlpacaClosureWorld:
    api: AlpacaBrokerStandIn
    clock: ManualClock
    broker: AlpacaBroker
    store: SqlStore
    records: ClosureStore
    mailer: OutboxMailer
    process: ClosureProcess
    deposits: int = 0  # POST /transfers of the set-up (the INCOMING deposit), not the closure's

    def sent(self, method: str, suffix: str, account_id: str) -> int:
        """Requests the stand-in answered for this account's `suffix` endpoint (any status)."""
        return sum(
            1 for m, path, _ in self.api.requests_seen()
            if m == method and account_id in path and path.endswith(suffix)
        )

    def close_alls(self, account_id: str) -> int:
        return self.sent("DELETE", "/positions", account_id)

    def transfer_posts(self, account_id: str) -> int:
        """The closure's withdrawal requests (accepted or refused)."""
        return self.sent("POST", "/transfers", account_id) - self.deposits

    def closes(self, account_id: str) -> int:
        return self.sent("POST", "/actions/close", account_id)

    def outgoing(self, account_id: str) -> list[dict[str, Any]]:
        """The stand-in's own OUTGOING transfers of this account, oldest first."""
        with self.api._lock:
            out = [dict(t) for t in self.api.state.transfers.values()
                   if t["account_id"] == account_id and t["direction"] == "OUTGOING"]
        return sorted(out, key=lambda t: t["created_at"])

    def sells(self, account_id: str) -> list[dict[str, Any]]:
        with self.api._lock:
            return [dict(o) for o in self.api.state.orders.values()
                    if o["account_id"] == account_id and o["side"] == "sell"]

    def advance(self, account_id: str, passes: int = 3) -> ClosureRecord:
        for _ in range(passes):
            record = self.process.advance(account_id)
        return record

    def emails(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in self.mailer.messages()]


@pytest.fixture
def make_world(tmp_path: Path, spec: Spec) -> Iterator[Any]:
    servers: list[AlpacaBrokerStandIn] = []

    def build(**env: str) -> AlpacaClosureWorld:
        clock = ManualClock(ny_morning(MON))
        api = AlpacaBrokerStandIn(KEY, SECRET, spec=spec, clock=clock.now).__enter__()
        servers.append(api)
        data = tmp_path / f"data{len(servers)}"
        settings = load_settings({
            "CLERA_DATA_DIR": str(data), "CLERA_BROKER": "alpaca", "BROKER_API_KEY": KEY,
            "BROKER_SECRET_KEY": SECRET, "CLERA_ALPACA_BROKER_URL": api.url, **env,
        }, env_file=None)
        db = Database(f"sqlite:///{settings.sqlite_path}")
        store = SqlStore(db)
        store.migrate()
        records = ClosureStore(db)
        records.migrate()
        broker = AlpacaBroker(settings)
        mailer = OutboxMailer(settings.data_path / "outbox")
        process = ClosureProcess(broker, records, store, clock, mailer, settings)
        return AlpacaClosureWorld(api, clock, broker, store, records, mailer, process)

    yield build
    for api in servers:
        api.__exit__(None, None, None)


def funded_account(w: AlpacaClosureWorld, cash: str = "120000", buys: dict[str, str] | None = None) -> tuple[str, str]:
    """Opened and funded on Monday, positions bought on Tuesday (AAPL 100 x $200, MSFT 50 x $400 by default),
    the day rolled; the clock is left on Wednesday 10:00. Returns (account id, relationship id)."""
    w.clock.set(ny_morning(MON))
    w.api.set_price("AAPL", "200")
    w.api.set_price("MSFT", "400")
    account = w.broker.create_account(application())
    rel = w.broker.create_ach_relationship(account.id, BANK)
    w.api.complete_transfer(w.broker.create_transfer(account.id, rel.id, Decimal(cash), "INCOMING").id)
    w.api.end_of_day()
    w.clock.set(ny_morning(TUE))
    for symbol, qty in ({"AAPL": "100", "MSFT": "50"} if buys is None else buys).items():
        w.broker.submit_order(account.id, OrderRequest(symbol=symbol, side="buy", qty=Decimal(qty)))
    w.api.end_of_day()
    w.store.ensure_user(USER, "ada@example.com")
    w.store.add_account(USER, account.id, email="ada@example.com", status="active")
    w.deposits = w.sent("POST", "/transfers", account.id)
    assert w.deposits == 1
    w.clock.set(ny_morning(WED))
    return account.id, rel.id


def morning(w: AlpacaClosureWorld, day: dt.date) -> None:
    """The market opens on `day` (queued sells fill) and yesterday's withdrawals have cleared."""
    w.clock.set(ny_morning(day))
    w.api.open_market()
    for t in list(w.api.state.transfers.values()):
        if t["direction"] == "OUTGOING" and t["status"] == "SENT_TO_CLEARING":
            w.api.complete_transfer(t["id"])


def evening(w: AlpacaClosureWorld, day: dt.date) -> None:
    """The close: outgoing transfers go to clearing, the day's sale proceeds settle overnight (T+1)."""
    w.clock.set(ny_morning(day) + EVENING)
    w.api.close_market()
    for t in list(w.api.state.transfers.values()):
        if t["direction"] == "OUTGOING" and t["status"] == "QUEUED":
            w.api.move_transfer(t["id"], "SENT_TO_CLEARING")
    w.api.end_of_day()


# --- the whole closure ---------------------------------------------------------------------------
def test_whole_closure_against_alpaca(make_world: Any) -> None:
    w: AlpacaClosureWorld = make_world()
    account_id, rel_id = funded_account(w)
    account = w.broker.get_account(account_id)
    assert (account.status, account.cash, account.cash_withdrawable) == ("ACTIVE", Decimal("80000.00"),
                                                                          Decimal("80000.00"))
    assert [r.status for r in w.broker.list_ach_relationships(account_id)] == ["APPROVED"]

    ready = w.process.readiness(account_id)
    assert ready.ready, ready
    assert ready.details["positions"] == 2 and ready.details["open_orders"] == 0

    # Wednesday evening, the market closed: one close-all, its sells queue for the open
    w.clock.set(ny_morning(WED) + EVENING)
    w.api.close_market()
    out = w.process.initiate(account_id, USER, rel_id)
    assert out["success"] and out["confirmation_code"].startswith("CLA-")
    code = out["confirmation_code"]
    assert w.close_alls(account_id) == 1
    assert ("DELETE", f"/v1/trading/accounts/{account_id}/positions", 207) in w.api.requests_seen()
    assert w.store.get_account(account_id).status == "pending_closure"
    assert w.store.get_account(account_id).confirmation_code == code
    assert sorted((o["symbol"], o["status"]) for o in w.sells(account_id)) == [("AAPL", "accepted"),
                                                                               ("MSFT", "accepted")]
    assert len(w.broker.list_positions(account_id)) == 2 and len(w.broker.list_orders(account_id, "open")) == 2
    assert not w.process.readiness(account_id).ready  # a closure is running

    # repeated passes while the sells wait: no second close-all, no withdrawal
    assert w.advance(account_id).step == "liquidating_positions"
    assert w.close_alls(account_id) == 1 and w.transfer_posts(account_id) == 0
    with pytest.raises(Conflict):
        w.process.cancel(account_id)  # the liquidation was sent
    assert w.process.settlement_status(account_id)["settled"] is False

    # Thursday: the sells fill at the open; the proceeds settle overnight (T+1)
    morning(w, THU)
    assert w.broker.list_positions(account_id) == []
    account = w.broker.get_account(account_id)
    assert (account.cash, account.cash_withdrawable) == (Decimal("120000.00"), Decimal("80000.00"))
    assert w.advance(account_id).step == "waiting_settlement"
    assert w.transfer_posts(account_id) == 0  # $80,000 is withdrawable, but the whole balance waits for T+1
    with pytest.raises(Rejected):
        w.process.withdraw_funds(account_id)
    assert w.transfer_posts(account_id) == 0
    evening(w, THU)

    # Friday: settled; the first $50,000 (the daily ACH limit) goes out, once however often it is advanced
    morning(w, FRI)
    account = w.broker.get_account(account_id)
    assert account.cash == account.cash_withdrawable == Decimal("120000.00")
    record = w.advance(account_id)
    assert record.step == "partial_withdrawal_waiting" and w.transfer_posts(account_id) == 1
    assert w.process.withdraw_funds(account_id)["transfer_id"] == record.transfers[0].id  # the one in flight
    assert w.transfer_posts(account_id) == 1
    first = record.transfers[0].id
    assert w.process.withdrawal_status(account_id, first)["status"] == "QUEUED"
    evening(w, FRI)
    assert w.process.withdrawal_status(account_id, first)["status"] == "SENT_TO_CLEARING"
    assert w.advance(account_id).step == "partial_withdrawal_waiting"

    # Saturday: the first withdrawal completed; no ACH on the weekend nor on Martin Luther King Jr. Day
    for day in (SAT, SUN, MLK):
        morning(w, day)
        w.advance(account_id)
        w.clock.set(ny_morning(day) + dt.timedelta(hours=4))
        w.advance(account_id)
    assert w.process.withdrawal_status(account_id, first)["complete"] is True
    assert w.transfer_posts(account_id) == 1
    assert w.records.get(account_id).step == "withdrawing_funds"

    morning(w, TUE2)
    assert w.advance(account_id).step == "partial_withdrawal_waiting"
    assert w.transfer_posts(account_id) == 2
    w.api.complete_transfer(w.outgoing(account_id)[-1]["id"])  # cleared the same day
    w.clock.set(ny_morning(TUE2) + dt.timedelta(hours=4))
    assert w.advance(account_id).step == "withdrawing_funds"
    assert w.transfer_posts(account_id) == 2  # one withdrawal per banking day
    evening(w, TUE2)

    # Wednesday: the last $20,000; closing waits for it to complete, then the account closes once
    morning(w, WED2)
    assert w.advance(account_id).step == "partial_withdrawal_waiting"
    assert w.transfer_posts(account_id) == 3 and w.closes(account_id) == 0
    with pytest.raises(Rejected) as early:
        w.process.close_account(account_id)
    assert "in flight" in early.value.message and w.closes(account_id) == 0
    w.api.move_transfer(w.outgoing(account_id)[-1]["id"], "SENT_TO_CLEARING")
    w.api.complete_transfer(w.outgoing(account_id)[-1]["id"])
    record = w.advance(account_id)
    assert record.step == "completed"
    assert w.closes(account_id) == 1
    assert ("POST", f"/v1/accounts/{account_id}/actions/close", 204) in w.api.requests_seen()
    assert w.broker.get_account(account_id).status == "ACCOUNT_CLOSED"

    out_transfers = w.outgoing(account_id)
    assert [Decimal(t["amount"]) for t in out_transfers] == [Decimal("50000.00"), Decimal("50000.00"),
                                                             Decimal("20000.00")]
    assert sum(Decimal(t["amount"]) for t in out_transfers) == Decimal("120000.00")  # the cash after the sale
    assert {t["status"] for t in out_transfers} == {"COMPLETE"}
    assert {t["relationship_id"] for t in out_transfers} == {rel_id}
    assert [t["created_at"][:10] for t in out_transfers] == ["2025-01-17", "2025-01-21", "2025-01-22"]
    assert w.broker.get_account(account_id).cash == Decimal(0)
    assert len(w.sells(account_id)) == 2 and w.close_alls(account_id) == 1

    assert [h.step for h in record.history] == [
        "initiated", "canceling_orders", "liquidating_positions", "waiting_settlement", "withdrawing_funds",
        "partial_withdrawal_waiting", "withdrawing_funds", "partial_withdrawal_waiting", "withdrawing_funds",
        "partial_withdrawal_waiting", "closing_account", "completed",
    ]
    stored = w.store.get_account(account_id)
    assert stored.status == "closed" and stored.confirmation_code == code
    assert w.process.progress(account_id)["withdrawn"] == "120000.00"
    assert w.process.unfinished() == []
    mails = w.emails()
    assert len(mails) == 2 and all(code in m.get_body(("plain",)).get_content() for m in mails)

    # finished: further passes and calls send nothing
    before = len(w.api.requests_seen())
    w.advance(account_id)
    assert w.process.close_account(account_id)["success"] is True
    assert w.closes(account_id) == 1 and w.transfer_posts(account_id) == 3 and w.close_alls(account_id) == 1
    assert not any(m in ("POST", "DELETE") for m, _, _ in w.api.requests_seen()[before:])


# --- answers lost after Alpaca acted ---------------------------------------------------------------
def test_a_lost_close_all_answer_is_found_at_alpaca_not_sent_again(make_world: Any) -> None:
    """Alpaca sold, but the close-all answer never arrived: the next pass finds the sells, sends nothing."""
    w: AlpacaClosureWorld = make_world()
    account_id, rel_id = funded_account(w)
    w.clock.set(ny_morning(WED) + EVENING)
    w.api.close_market()
    w.api.lose_next_answer("DELETE", "/positions")
    with pytest.raises(Unavailable):
        w.process.initiate(account_id, USER, rel_id)
    assert w.close_alls(account_id) == 1 and len(w.sells(account_id)) == 2
    record = w.records.get(account_id)
    assert record.liquidation_requested_at is not None and record.liquidation_sent_at is None
    record = w.advance(account_id)
    assert record.liquidation_sent_at is not None and record.liquidations == 1
    assert record.step == "liquidating_positions"
    assert w.close_alls(account_id) == 1
    morning(w, THU)
    w.advance(account_id)
    assert w.close_alls(account_id) == 1 and w.broker.list_positions(account_id) == []


def test_a_lost_transfer_answer_is_found_at_alpaca_not_sent_again(make_world: Any) -> None:
    """Alpaca queued the withdrawal, but its answer was lost: the next pass adopts it instead of sending again."""
    w: AlpacaClosureWorld = make_world()
    account_id, rel_id = funded_account(w, cash="30000", buys={})
    w.process.initiate(account_id, USER, rel_id)  # no positions: an empty close-all
    assert w.close_alls(account_id) == 1
    w.api.lose_next_answer("POST", "/transfers")
    with pytest.raises(Unavailable):
        w.process.advance(account_id)
    assert w.transfer_posts(account_id) == 1
    assert w.records.get(account_id).pending_withdrawal is not None
    record = w.advance(account_id)
    assert record.step == "partial_withdrawal_waiting"
    assert [t.id for t in record.transfers] == [w.outgoing(account_id)[0]["id"]]
    assert w.transfer_posts(account_id) == 1
    w.api.complete_transfer(record.transfers[0].id)
    assert w.advance(account_id).step == "completed"
    assert w.transfer_posts(account_id) == 1 and w.closes(account_id) == 1
    assert [Decimal(t["amount"]) for t in w.outgoing(account_id)] == [Decimal("30000.00")]


# --- rejected and returned withdrawals --------------------------------------------------------------
def test_a_rejected_then_returned_withdrawal_is_retried_then_the_closure_fails(make_world: Any) -> None:
    w: AlpacaClosureWorld = make_world(CLERA_CLOSURE_MAX_TRANSFER_ATTEMPTS="2")
    account_id, rel_id = funded_account(w, cash="30000", buys={})
    w.process.initiate(account_id, USER, rel_id)
    record = w.advance(account_id)
    assert record.step == "partial_withdrawal_waiting" and w.transfer_posts(account_id) == 1
    first = record.transfers[0].id

    w.api.fail_transfer(first, "REJECTED", "bank account closed")
    assert w.broker.get_account(account_id).cash_withdrawable == Decimal("30000.00")  # the cash is back
    record = w.advance(account_id)
    assert record.rejected_transfers == 1 and record.step == "partial_withdrawal_waiting"
    assert len(record.transfers) == 2 and record.transfers[1].attempt == 2
    assert w.transfer_posts(account_id) == 2
    assert w.process.withdrawal_status(account_id, first)["reason"] == "bank account closed"

    second = record.transfers[1].id
    w.api.move_transfer(second, "SENT_TO_CLEARING")
    w.api.fail_transfer(second, "RETURNED", "R01 insufficient funds")
    record = w.advance(account_id)
    assert record.step == "failed" and record.failure_reason is not None
    assert "2 times" in record.failure_reason
    assert w.process.progress(account_id)["step_number"] == -1
    assert w.transfer_posts(account_id) == 2 and w.closes(account_id) == 0
    assert [t["status"] for t in w.outgoing(account_id)] == ["REJECTED", "RETURNED"]
    assert w.broker.get_account(account_id).cash == Decimal("30000.00")  # nothing left the account
    assert len(w.emails()) == 2  # initiation, failure
    w.clock.set(ny_morning(THU))
    assert w.advance(account_id).step == "failed"  # stays failed, sends nothing more
    assert w.transfer_posts(account_id) == 2 and w.closes(account_id) == 0 and len(w.emails()) == 2


def test_withdrawals_alpaca_refuses_at_once_are_bounded_then_the_closure_fails(make_world: Any) -> None:
    w: AlpacaClosureWorld = make_world(CLERA_CLOSURE_MAX_TRANSFER_ATTEMPTS="2")
    account_id, rel_id = funded_account(w, cash="30000", buys={})
    w.process.initiate(account_id, USER, rel_id)
    w.broker.delete_ach_relationship(account_id, rel_id)  # the customer unlinked the bank mid-closure
    for day in (WED, THU, FRI, TUE2, WED2):
        w.clock.set(ny_morning(day))
        w.advance(account_id, passes=5)
    assert w.outgoing(account_id) == []  # nothing ever left
    assert w.transfer_posts(account_id) <= 2  # the configured attempts
    assert w.records.get(account_id).step == "failed"
