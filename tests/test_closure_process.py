"""The closure state machine on the paper broker, day by day on a manual clock; real Redis prices,
real SQLite / PostgreSQL, emails as .eml files in an outbox folder. Nothing of the project is mocked."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from closure_support import (
    USER,
    WED,
    World,
    funded_account,
    make_world,
    ny_morning,
    sell_orders,
    set_prices,
    withdrawals,
)

from brokerage.closure.records import ClosureRecord, HistoryEntry
from brokerage.email import OutboxMailer
from brokerage.errors import Conflict, InvalidRequest, NotFound, Rejected

TESTS = Path(__file__).parent


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


def days_from(start: dt.date, count: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(count)]


def run_days(world: World, account_id: str, start: dt.date, count: int, passes: int = 1) -> dict[dt.date, str]:
    """Moves the clock to 10:00 New York each calendar day and advances the closure; the step per day."""
    steps = {}
    for day in days_from(start, count):
        world.clock.set(ny_morning(day))
        for _ in range(passes):
            record = world.process.advance(account_id)
        steps[day] = record.step
        world.clock.set(ny_morning(day) + dt.timedelta(hours=4))  # the afternoon: another pass
        steps[day] = world.process.advance(account_id).step
    return steps


def emails_in(world: World) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in world.mailer.messages()]


# --- the whole closure ---------------------------------------------------------------------------
def test_whole_closure_day_by_day(tmp_path: Path, redis_url: str, db_url: str | None) -> None:
    world = make_world(tmp_path / "data", redis_url, db_url)
    account_id, rel_id = funded_account(world)
    assert world.broker.get_account(account_id).cash == Decimal("80000.00")

    ready = world.process.readiness(account_id)
    assert ready.ready, ready
    out = world.process.initiate(account_id, USER, rel_id)
    assert out["success"] and out["confirmation_code"].startswith("CLA-") and len(out["confirmation_code"]) == 12
    code = out["confirmation_code"]
    assert world.store.get_account(account_id).status == "pending_closure"
    assert world.store.get_account(account_id).confirmation_code == code
    # the market is open: both positions sold at once, the proceeds unsettled until T+1
    assert world.broker.list_positions(account_id) == []
    assert sorted(o.symbol for o in sell_orders(world, account_id)) == ["AAPL", "MSFT"]
    account = world.broker.get_account(account_id)
    assert account.cash == Decimal("120000.00") and account.cash_withdrawable == Decimal("80000.00")
    assert not world.process.readiness(account_id).ready  # a closure is running

    assert world.process.advance(account_id).step == "waiting_settlement"
    assert world.process.settlement_status(account_id)["settled"] is False
    steps = run_days(world, account_id, WED + dt.timedelta(days=1), 7)
    # Thu: settled, the first $50,000 out; Fri: the second; Sat..Mon (MLK day): waiting; Tue: the last $20,000;
    # Wed: it completed, the account closes
    assert steps == {
        dt.date(2025, 1, 16): "partial_withdrawal_waiting",
        dt.date(2025, 1, 17): "partial_withdrawal_waiting",
        dt.date(2025, 1, 18): "partial_withdrawal_waiting",
        dt.date(2025, 1, 19): "partial_withdrawal_waiting",
        dt.date(2025, 1, 20): "partial_withdrawal_waiting",
        dt.date(2025, 1, 21): "partial_withdrawal_waiting",
        dt.date(2025, 1, 22): "completed",
    }
    out_transfers = withdrawals(world, account_id)
    assert sorted(t.amount for t in out_transfers) == [Decimal("20000.00"), Decimal("50000.00"), Decimal("50000.00")]
    assert {t.status for t in out_transfers} == {"COMPLETE"}
    days = sorted(t.created_at.date() for t in out_transfers)
    assert days == [dt.date(2025, 1, 16), dt.date(2025, 1, 17), dt.date(2025, 1, 21)]
    assert world.broker.get_account(account_id).status == "ACCOUNT_CLOSED"
    assert len(sell_orders(world, account_id)) == 2

    record = world.records.get(account_id)
    assert record is not None and record.step == "completed" and record.completed_at is not None
    assert [h.step for h in record.history] == [
        "initiated", "canceling_orders", "liquidating_positions", "waiting_settlement", "withdrawing_funds",
        "partial_withdrawal_waiting", "withdrawing_funds", "partial_withdrawal_waiting", "withdrawing_funds",
        "partial_withdrawal_waiting", "closing_account", "completed",
    ]
    stored = world.store.get_account(account_id)
    assert stored.status == "closed" and stored.confirmation_code == code and stored.closed_at is not None
    assert world.records.unfinished() == [] and world.process.unfinished() == []

    progress = world.process.progress(account_id)
    assert progress["step_number"] == 5 and progress["total_steps"] == 5 and progress["withdrawn"] == "120000.00"
    status = world.process.status(account_id)
    assert status["account_status"] == "closed" and status["withdrawn"] == "120000.00"

    mails = emails_in(world)
    assert len(mails) == 2
    assert all(m["To"] == "ada@example.com" for m in mails)
    assert code in mails[0].get_body(("plain",)).get_content()
    assert code in mails[1].get_body(("plain",)).get_content()

    files = list(world.log_dir.glob(f"closure_{account_id}_*.log"))
    assert len(files) == 1 and files[0].name == f"closure_{account_id}_20250115_150000.log"
    lines = files[0].read_text(encoding="utf-8").splitlines()
    assert lines == world.records.log_lines(account_id)  # the store has the same lines
    assert lines[0].startswith("[2025-01-15 15:00:00] ✅ ACCOUNT_CLOSURE_INITIATION STARTED")
    text = "\n".join(lines)
    assert text.count("✅ WITHDRAW_ALL_FUNDS STARTED") == 3
    assert text.count("✅ LIQUIDATE_ALL_POSITIONS STARTED") == 1
    assert "SAFETY CHECK FINAL_CLOSURE_CHECKS: ✅ PASSED" in text
    assert "📧 INITIATION_EMAIL to ada@example.com: sent" in text
    assert "📧 COMPLETION_EMAIL to ada@example.com: sent" in text
    assert "⏱️ LIQUIDATION_OPERATION took" in text and "✅ CLOSE_ACCOUNT COMPLETED" in text
    assert world.records.log_lines(account_id, limit=2) == lines[-2:]

    # finished: further passes change nothing
    before = world.records.get(account_id)
    assert world.process.advance(account_id) == before


def test_closure_while_the_market_is_closed_queues_the_sells(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url)
    account_id, rel_id = funded_account(world, amount="60000")
    world.clock.set(ny_morning(WED) + dt.timedelta(hours=8))  # 18:00 New York, closed
    world.process.initiate(account_id, USER, rel_id)
    assert world.process.advance(account_id).step == "liquidating_positions"
    assert len(world.broker.list_orders(account_id, "open")) == 2
    assert world.process.advance(account_id).step == "liquidating_positions"  # no second liquidation
    steps = run_days(world, account_id, WED + dt.timedelta(days=1), 7)
    assert steps[dt.date(2025, 1, 16)] == "waiting_settlement"  # sold Thursday at the open, settles Friday
    assert steps[dt.date(2025, 1, 22)] == "completed"
    assert len(sell_orders(world, account_id)) == 2
    assert sum(t.amount for t in withdrawals(world, account_id)) == Decimal("60000.00")


# --- idempotency -----------------------------------------------------------------------------------
def test_repeated_and_concurrent_passes_never_sell_or_withdraw_twice(
    tmp_path: Path, redis_url: str, db_url: str | None
) -> None:
    world = make_world(tmp_path / "data", redis_url, db_url)
    account_id, rel_id = funded_account(world)
    # a second process (its own broker, store and database connections) on the same databases
    other = make_world(tmp_path / "data", redis_url, db_url, clock=world.clock)
    world.process.initiate(account_id, USER, rel_id)
    for day in days_from(WED, 8):
        world.clock.set(ny_morning(day))
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def run(process: object, barrier: threading.Barrier, errors: list[BaseException]) -> None:
            barrier.wait()
            try:
                for _ in range(3):
                    process.advance(account_id)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(p, barrier, errors)) for p in (world.process, other.process) * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    assert world.records.get(account_id).step == "completed"
    assert len(sell_orders(world, account_id)) == 2
    out = withdrawals(world, account_id)
    assert len(out) == 3 and sum(t.amount for t in out) == Decimal("120000.00")
    assert len(emails_in(world)) == 2  # one initiation, one completion


# --- crash safety ------------------------------------------------------------------------------
def run_killed(world: World, account_id: str, action: str, kill_on: str, rel_id: str = "") -> None:
    job = {"config": world.config(), "account_id": account_id, "action": action, "rel_id": rel_id, "kill_on": kill_on}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    proc = subprocess.run(
        [sys.executable, "-c", "import closure_support; closure_support.crash_main()", json.dumps(job)],
        env=env, cwd=TESTS.parent, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


def test_killed_after_the_liquidation_was_accepted(tmp_path: Path, redis_url: str, db_url: str | None) -> None:
    world = make_world(tmp_path / "data", redis_url, db_url)
    account_id, rel_id = funded_account(world, buys={"AAPL": "100"})  # one position: one sell order
    # the market is closed: the sell order waits for the open, where a second liquidation would replace it
    world.clock.set(ny_morning(WED) + dt.timedelta(hours=8))
    run_killed(world, account_id, "initiate", "sell", rel_id)
    record = world.records.get(account_id)
    # killed between the broker accepting the sell and the record's save
    assert record is not None and record.liquidation_requested_at is not None and record.liquidation_sent_at is None
    assert len(sell_orders(world, account_id)) == 1
    assert world.process.advance(account_id).liquidation_sent_at is not None
    run_days(world, account_id, WED, 8)
    assert world.records.get(account_id).step == "completed"
    assert len(sell_orders(world, account_id)) == 1  # exactly one liquidation
    assert world.records.get(account_id).liquidations == 1
    assert sum(t.amount for t in withdrawals(world, account_id)) == Decimal("120000.00")
    assert "liquidation of an interrupted run found at the broker" in "\n".join(world.records.log_lines(account_id))


def test_killed_after_a_withdrawal_was_accepted(tmp_path: Path, redis_url: str, db_url: str | None) -> None:
    world = make_world(tmp_path / "data", redis_url, db_url)
    account_id, rel_id = funded_account(world)
    world.process.initiate(account_id, USER, rel_id)
    thursday = WED + dt.timedelta(days=1)
    world.clock.set(ny_morning(thursday))
    run_killed(world, account_id, "advance", "withdraw")
    record = world.records.get(account_id)
    assert record.pending_withdrawal is not None and record.transfers == []
    assert len(withdrawals(world, account_id)) == 1
    record = world.process.advance(account_id)
    assert [t.amount for t in record.transfers] == [Decimal("50000.00")]
    assert record.step == "partial_withdrawal_waiting"
    world.process.advance(account_id)
    assert len(withdrawals(world, account_id)) == 1  # not sent again
    run_days(world, account_id, thursday, 7)
    assert world.records.get(account_id).step == "completed"
    out = withdrawals(world, account_id)
    assert len(out) == 3 and sum(t.amount for t in out) == Decimal("120000.00")


# --- rejected and returned transfers ------------------------------------------------------------
def bank_returns(world: World, transfer_id: str) -> None:
    """The bank returns a withdrawal: the ledger marks it RETURNED and gives the cash back."""
    from brokerage.sql import Database

    db = Database(world.db_url)
    with db.transaction():
        row = db.fetchone("SELECT account_id, amount FROM paper_transfers WHERE id = ?", (transfer_id,))
        db.execute("UPDATE paper_transfers SET status = 'RETURNED' WHERE id = ?", (transfer_id,))
        acct = db.fetchone("SELECT cash FROM paper_accounts WHERE id = ?", (row["account_id"],))
        cash = Decimal(acct["cash"]) + Decimal(row["amount"])
        db.execute("UPDATE paper_accounts SET cash = ? WHERE id = ?", (str(cash), row["account_id"]))
    db.close()


def test_a_returned_withdrawal_is_retried_then_the_closure_fails(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url, CLERA_CLOSURE_MAX_TRANSFER_ATTEMPTS="2")
    account_id, rel_id = funded_account(world, amount="30000", buys={})
    world.process.initiate(account_id, USER, rel_id)
    first = world.process.advance(account_id).transfers[0]  # no positions: withdrawing at once
    bank_returns(world, first.id)
    record = world.process.advance(account_id)
    assert record.rejected_transfers == 1 and record.step == "partial_withdrawal_waiting"
    assert len(record.transfers) == 2 and record.transfers[1].attempt == 2
    bank_returns(world, record.transfers[1].id)
    record = world.process.advance(account_id)
    assert record.step == "failed" and "returned 2 times" in record.failure_reason
    assert world.process.progress(account_id)["step_number"] == -1
    assert len(withdrawals(world, account_id)) == 2
    subjects = [m["Subject"] for m in emails_in(world)]
    assert len(subjects) == 2  # initiation, failure
    assert world.process.advance(account_id).step == "failed"  # stays failed, sends nothing more
    assert len(emails_in(world)) == 2


# --- bad input -----------------------------------------------------------------------------------
def test_bad_input_changes_nothing(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url)
    account_id, rel_id = funded_account(world)
    with pytest.raises(InvalidRequest):
        world.process.initiate(account_id, USER, "")
    with pytest.raises(NotFound) as unknown:
        world.process.initiate(account_id, USER, "no-such-relationship")
    assert unknown.value.status == 404
    with pytest.raises(NotFound):
        world.process.progress(account_id)  # no closure yet
    with pytest.raises(NotFound):
        world.process.initiate("no-such-account", USER, rel_id)
    assert world.records.get(account_id) is None
    assert world.store.get_account(account_id).status == "active"
    assert sell_orders(world, account_id) == []

    # a relationship that is no longer approved
    other_id, other_rel = funded_account(world, amount="1000", buys={}, email="bob@example.com", user="user-bob")
    world.broker.delete_ach_relationship(other_id, other_rel)
    with pytest.raises(Rejected) as refused:
        world.process.initiate(other_id, "user-bob", other_rel)
    assert refused.value.code == "ach_not_approved"
    readiness = world.process.readiness(other_id)
    assert not readiness.ready and "bank" in readiness.reason

    world.process.initiate(account_id, USER, rel_id)
    with pytest.raises(Conflict) as again:
        world.process.initiate(account_id, USER, rel_id)
    assert again.value.status == 409
    with pytest.raises(Conflict) as late:
        world.process.cancel(account_id)
    assert late.value.status == 409 and late.value.code == "closure_in_progress"
    assert world.store.get_account(account_id).status == "pending_closure"


def test_close_with_money_left_is_refused(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url)
    account_id, rel_id = funded_account(world, amount="100", buys={})
    world.process.initiate(account_id, USER, rel_id)
    before = world.records.get(account_id)
    with pytest.raises(Rejected) as refused:
        world.process.close_account(account_id)
    assert "$100.00 remaining" in refused.value.message
    assert world.records.get(account_id).step == before.step
    assert world.store.get_account(account_id).status == "pending_closure"
    account = world.broker.get_account(account_id)
    assert account.status == "ACTIVE" and account.cash == Decimal("100.00")
    world.process.advance(account_id)  # sends the $100 withdrawal; closing waits for it to complete
    with pytest.raises(Rejected) as in_flight:
        world.process.close_account(account_id)
    assert "in flight" in in_flight.value.message
    with pytest.raises(NotFound):
        world.process.withdrawal_status(account_id, "not-a-transfer-of-this-closure")


def test_route_methods_withdraw_and_close(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url)
    account_id, rel_id = funded_account(world, amount="700.50", buys={})
    world.process.initiate(account_id, USER, rel_id)
    assert world.process.settlement_status(account_id)["settled"] is True
    sent = world.process.withdraw_funds(account_id)
    assert sent == {"success": True, "transfer_id": sent["transfer_id"], "amount": "700.50"}
    assert world.process.withdraw_funds(account_id) == sent  # the one in flight, not a second
    status = world.process.withdrawal_status(account_id, sent["transfer_id"])
    assert status["amount"] == "700.50" and status["complete"] is False
    with pytest.raises(Rejected):
        world.process.close_account(account_id)  # the withdrawal is still in flight
    world.clock.set(ny_morning(WED + dt.timedelta(days=1)))
    assert world.process.withdrawal_status(account_id, sent["transfer_id"])["complete"] is True
    assert world.process.close_account(account_id)["success"] is True
    assert world.store.get_account(account_id).status == "closed"
    assert world.process.resume(account_id) == {"success": True, "step": "completed", "message": "Account closed"}
    assert len(withdrawals(world, account_id)) == 1


def test_cancel_before_the_liquidation_was_sent(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url)
    account_id, rel_id = funded_account(world)
    # a run that died after saving the record, before its liquidation call
    now = world.clock.now()
    world.store.set_account_status(account_id, "pending_closure", confirmation_code="CLA-TEST0001")
    world.records.save(ClosureRecord(
        account_id=account_id, user_id=USER, ach_relationship_id=rel_id, confirmation_code="CLA-TEST0001",
        initiated_at=now, updated_at=now, liquidation_requested_at=now,
        history=[HistoryEntry(step="initiated", at=now, message="closure initiated")],
    ))
    assert world.process.cancel(account_id)["success"] is True
    assert world.store.get_account(account_id).status == "active"
    assert world.records.get(account_id).step == "failed"
    assert sell_orders(world, account_id) == [] and len(world.broker.list_positions(account_id)) == 2
    # a new closure may start afterwards
    assert world.process.readiness(account_id).ready
    assert world.process.initiate(account_id, USER, rel_id)["success"]


def test_an_intent_without_its_liquidation_is_sent_once(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url)
    account_id, rel_id = funded_account(world)
    now = world.clock.now()
    world.records.save(ClosureRecord(
        account_id=account_id, user_id=USER, ach_relationship_id=rel_id, confirmation_code="CLA-TEST0002",
        initiated_at=now, updated_at=now, liquidation_requested_at=now,
    ))
    assert world.process.advance(account_id).liquidations == 1
    world.process.advance(account_id)
    assert len(sell_orders(world, account_id)) == 2


def test_the_store_on_both_databases(tmp_path: Path, redis_url: str, db_url: str | None) -> None:
    world = make_world(tmp_path / "data", redis_url, db_url)
    now = world.clock.now()
    for i, user in enumerate(["u1", "u1", "u2"]):
        world.records.save(ClosureRecord(
            account_id=f"acct-{i}", user_id=user, ach_relationship_id="r", confirmation_code=f"CLA-{i}",
            initiated_at=now + dt.timedelta(minutes=i), updated_at=now, step="completed" if i == 2 else "initiated",
        ))
    assert [r.account_id for r in world.records.of_user("u1")] == ["acct-1", "acct-0"]
    assert [r.account_id for r in world.records.all()] == ["acct-2", "acct-1", "acct-0"]
    assert [r.account_id for r in world.records.unfinished()] == ["acct-0", "acct-1"]
    record = world.records.get("acct-0")
    record.step = "failed"
    record.failure_reason = "x"
    world.records.save(record)
    assert world.records.get("acct-0").failure_reason == "x"
    for i in range(5):
        world.records.add_log("acct-0", now, f"line {i}")
    assert world.records.log_lines("acct-0") == [f"line {i}" for i in range(5)]
    assert world.records.log_lines("acct-0", limit=2) == ["line 3", "line 4"]
    world.records.migrate()  # idempotent


def test_a_failed_email_is_logged_and_never_blocks(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")
    world.process.mailer = OutboxMailer(blocker / "outbox")  # writing there fails: MailError
    account_id, rel_id = funded_account(world, amount="500", buys={})
    assert world.process.initiate(account_id, USER, rel_id)["success"]
    world.process.advance(account_id)
    world.clock.set(ny_morning(WED + dt.timedelta(days=1)))
    assert world.process.advance(account_id).step == "completed"
    text = "\n".join(world.records.log_lines(account_id))
    assert "📧 INITIATION_EMAIL to ada@example.com: FAILED" in text
    assert "📧 COMPLETION_EMAIL to ada@example.com: FAILED" in text


def test_positions_left_after_a_refused_sell_are_sold_again_the_next_day(tmp_path: Path, redis_url: str) -> None:
    world = make_world(tmp_path / "data", redis_url)
    account_id, rel_id = funded_account(world)
    redis.Redis.from_url(redis_url).delete("price:MSFT")  # the feed lost MSFT: its sell is refused
    world.process.initiate(account_id, USER, rel_id)
    assert [p.symbol for p in world.broker.list_positions(account_id)] == ["MSFT"]
    record = world.process.advance(account_id)
    assert record.step == "liquidating_positions" and record.liquidations == 1  # not again the same day
    set_prices(redis_url)
    world.clock.set(ny_morning(WED + dt.timedelta(days=1)))
    record = world.process.advance(account_id)
    assert record.liquidations == 2 and world.broker.list_positions(account_id) == []
    world.process.advance(account_id)
    assert sorted(o.symbol for o in sell_orders(world, account_id)) == ["AAPL", "MSFT"]
    run_days(world, account_id, WED + dt.timedelta(days=2), 8)
    assert world.records.get(account_id).step == "completed"
    assert sum(t.amount for t in withdrawals(world, account_id)) == Decimal("120000.00")


def test_the_closure_emails_reach_a_real_smtp_server(tmp_path: Path, redis_url: str) -> None:
    """The same closure with SMTP configured: initiation and completion arrive at a local server."""
    from aiosmtpd.controller import Controller
    from conftest import free_port

    from brokerage.closure.process import ClosureProcess
    from brokerage.email import mailer_from_settings
    from engine.config import load_settings

    received: list[email.message.EmailMessage] = []

    class Inbox:
        async def handle_DATA(self, server, session, envelope):
            received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    port = free_port()
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        world = make_world(tmp_path / "data", redis_url)
        settings = load_settings({"CLERA_DATA_DIR": str(tmp_path / "data"), "REDIS_URL": redis_url,
                                  "CLERA_SMTP_HOST": "127.0.0.1", "CLERA_SMTP_PORT": str(port),
                                  "CLERA_SMTP_STARTTLS": "false"}, env_file=None)
        process = ClosureProcess(world.broker, world.records, world.store, world.clock, mailer_from_settings(settings),
                                 settings)
        account_id, rel_id = funded_account(world)
        code = process.initiate(account_id, USER, rel_id)["confirmation_code"]
        for day in days_from(WED + dt.timedelta(days=1), 7):
            world.clock.set(ny_morning(day))
            process.advance(account_id)
        assert world.records.get(account_id).step == "completed"
        assert [m["To"] for m in received] == ["ada@example.com"] * 2
        assert all(code in m["Subject"] and code in m.get_body(("plain",)).get_content() for m in received)
        assert world.mailer.messages() == []  # nothing fell back to the outbox
        assert "📧 COMPLETION_EMAIL to ada@example.com: sent" in "\n".join(world.records.log_lines(account_id))
    finally:
        smtp.stop()
