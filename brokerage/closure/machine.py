"""The closure state machine: check the broker, then act; one idempotent pass at a time.

The route-facing operations around it (readiness, initiation, status views) are
`brokerage.closure.process.ClosureProcess`; the step rules themselves are `brokerage.closure.steps`.

Every pass (`advance`) holds the closure's lock (`ClosureStore.lock`), reads the broker's truth
(account, positions, open orders, transfers), reconciles the record with it, derives the current
step and performs at most the one action that step calls for, saving the record after each change.

Alpaca's close-all and transfers take no idempotency key, so an action is guarded twice: an intent
(`liquidation_requested_at`, `pending_withdrawal`) is saved before the broker call, and a pass that
finds an intent without its outcome looks for the outcome at the broker (a sell order, an OUTGOING
transfer of that amount) before it would send again. A process killed between the broker accepting
a call and the record's save therefore never sells or withdraws twice.

Derived steps: closed account -> completed; open orders or positions -> liquidating_positions; a
withdrawal of this closure in flight -> partial_withdrawal_waiting; cash > $1 with withdrawable < cash
-> waiting_settlement; withdrawable == cash > $1 -> withdrawing_funds; cash <= $1 -> closing_account.
"""

from __future__ import annotations

import datetime as dt
import time

from brokerage.broker import Broker
from brokerage.closure.emails import completion_email, failure_email
from brokerage.closure.log import ClosureLog, money
from brokerage.closure.records import (
    ClosureRecord,
    ClosureStore,
    ClosureTransfer,
    HistoryEntry,
    PendingWithdrawal,
    Step,
)
from brokerage.closure.steps import (
    ACCOUNT_CLOSED,
    CENT,
    COMPLETE_TRANSFER,
    MAX_CASH_TO_CLOSE,
    SKEW,
    VOID_TRANSFER,
    ZERO,
    Snapshot,
    amount_text,
    derive_step,
    in_flight,
)
from brokerage.email import Email, Mailer
from brokerage.errors import NotFound, Rejected
from brokerage.paper_rules import new_york_date
from brokerage.store import Store
from engine import calendar
from engine.clock import Clock
from engine.config import Settings


class ClosureMachine:
    """The pass (`advance`) and the actions it takes; every action saves the record after each change."""

    def __init__(
        self, broker: Broker, records: ClosureStore, store: Store, clock: Clock, mailer: Mailer, settings: Settings
    ) -> None:
        self.broker = broker
        self.records = records
        self.store = store
        self.clock = clock
        self.mailer = mailer
        self.settings = settings
        self.log_dir = settings.data_path / "logs" / "account_closures"

    # ===========================================================================================
    # helpers
    # ===========================================================================================
    def log_for(self, record: ClosureRecord) -> ClosureLog:
        return ClosureLog(record.account_id, record.initiated_at, self.log_dir, self.clock, self.records)

    def _require(self, account_id: str) -> ClosureRecord:
        record = self.records.get(account_id)
        if record is None:
            raise NotFound(f"account {account_id} has no closure", code="closure_not_found")
        return record

    def _snapshot(self, account_id: str) -> Snapshot:
        account = self.broker.get_account(account_id)
        if account.status == ACCOUNT_CLOSED:
            return Snapshot(account, [], [], self.broker.list_transfers(account_id))
        return Snapshot(
            account,
            self.broker.list_positions(account_id),
            self.broker.list_orders(account_id, "open"),
            self.broker.list_transfers(account_id),
        )

    def _save(self, record: ClosureRecord) -> None:
        record.updated_at = self.clock.now()
        self.records.save(record)

    def _move(self, record: ClosureRecord, step: Step, message: str, log: ClosureLog) -> bool:
        """Enters `step` (history and log); False when the record was already there."""
        if record.step == step:
            return False
        record.history.append(HistoryEntry(step=step, at=self.clock.now(), message=message))
        record.step = step
        log.line("📋", f"Current Step: {step} ({message})")
        return True

    def _send(self, kind: str, email: Email | None, record: ClosureRecord, log: ClosureLog) -> bool:
        """Sends one email; a failure is logged and never raised."""
        if email is None:
            log.email_attempt(kind, None, False, {"reason": "no email address on file"})
            return False
        started = time.perf_counter()
        try:
            self.mailer.send(email)
        except Exception as exc:  # noqa: BLE001 - an email never blocks a closure
            log.email_attempt(kind, email.to, False, {"error": str(exc), "confirmation": record.confirmation_code})
            return False
        log.email_attempt(kind, email.to, True, {"confirmation": record.confirmation_code})
        log.timing(kind, time.perf_counter() - started)
        return True

    def _fail(self, record: ClosureRecord, reason: str, log: ClosureLog) -> None:
        record.failure_reason = reason
        self._move(record, "failed", reason, log)
        log.step_failure("ACCOUNT_CLOSURE", {"reason": reason})
        self._save(record)
        self._send("FAILURE_EMAIL", failure_email(record), record, log)

    def _ny_day(self, moment: dt.datetime) -> dt.date:
        return new_york_date(moment)

    def _liquidate(self, record: ClosureRecord, log: ClosureLog) -> None:
        """Cancels every open order and sells every position (one broker call), intent saved first."""
        record.liquidation_requested_at = self.clock.now()
        self._move(record, "canceling_orders", "canceling orders and liquidating positions", log)
        self._save(record)
        log.step_start("LIQUIDATE_ALL_POSITIONS")
        started = time.perf_counter()
        results = self.broker.close_all_positions(record.account_id)
        log.timing("LIQUIDATION_OPERATION", time.perf_counter() - started)
        record.liquidation_sent_at = self.clock.now()
        record.liquidations += 1
        log.broker_data("CLOSE_ALL_POSITIONS", results)
        failed = [r for r in results if r.status >= 300]
        log.safety_check(
            "LIQUIDATION_SUCCESS", not failed, {"orders": len(results) - len(failed), "refused": len(failed)}
        )
        self._move(record, "liquidating_positions", f"{len(results)} sell orders sent", log)
        self._save(record)

    # ===========================================================================================
    # the pass
    # ===========================================================================================
    def advance(self, account_id: str) -> ClosureRecord:
        """One idempotent pass: check the broker, then act; the record is saved after each change."""
        with self.records.lock(account_id):
            record = self._require(account_id)
            if record.finished:
                return record
            self._pass(record)
            return record

    def _pass(self, record: ClosureRecord) -> None:
        log = self.log_for(record)
        snap = self._snapshot(record.account_id)
        self._reconcile(record, snap, log)
        if record.finished:
            return
        step = derive_step(snap, record)
        if step == "completed":
            self._complete(record, log)
            return
        if step == "initiated":  # a run died before its liquidation reached the broker
            self._liquidate(record, log)
            return
        if step == "liquidating_positions":
            if self._move(record, step, "waiting for the sell orders to fill", log):
                self._save(record)
            self._maybe_reliquidate(record, snap, log)
            return
        if step == "partial_withdrawal_waiting":
            if self._move(record, step, "waiting for the withdrawal to complete", log):
                self._save(record)
            return
        if step == "waiting_settlement":
            if self._move(record, step, "waiting for T+1 settlement of the sale proceeds", log):
                self._save(record)
            return
        if step == "withdrawing_funds":
            if self._move(record, step, "settled cash to withdraw", log):
                self._save(record)
            self._withdraw(record, snap, log)
            return
        if self._move(record, "closing_account", "cash withdrawn", log):
            self._save(record)
        try:
            self._close(record, snap, log)
        except Rejected as exc:  # e.g. a deposit still in flight: the next pass tries again
            log.warning(f"the account cannot be closed yet: {exc.message}")

    def _reconcile(self, record: ClosureRecord, snap: Snapshot, log: ClosureLog) -> None:
        """Brings the record up to the broker's truth: lost outcomes of intents, transfer statuses."""
        changed = False
        if record.liquidation_requested_at is not None and record.liquidation_sent_at is None:
            since = record.liquidation_requested_at - SKEW
            orders = self.broker.list_orders(record.account_id, "all")
            sells = [o for o in orders if o.side == "sell" and o.created_at >= since]
            if sells:
                record.liquidation_sent_at = min(o.created_at for o in sells)
                record.liquidations += 1
                self._move(record, "liquidating_positions", "liquidation found at the broker after a restart", log)
                log.warning(f"liquidation of an interrupted run found at the broker: {len(sells)} sell orders")
                changed = True
        if record.pending_withdrawal is not None:
            pending = record.pending_withdrawal
            known = {t.id for t in record.transfers}
            found = [
                t for t in snap.transfers
                if t.id not in known and t.direction == "OUTGOING" and t.amount == pending.amount
                and t.relationship_id in (None, record.ach_relationship_id)
                and t.created_at >= pending.requested_at - SKEW
            ]
            if found:
                t = min(found, key=lambda t: t.created_at)
                record.transfers.append(ClosureTransfer(
                    id=t.id, amount=t.amount, status=t.status, created_at=t.created_at,
                    attempt=record.rejected_transfers + 1,
                ))
                log.warning(f"withdrawal of an interrupted run found at the broker: {t.id} {money(t.amount)}")
            else:
                log.warning(f"withdrawal of {money(pending.amount)} never reached the broker; it may be sent again")
            record.pending_withdrawal = None
            changed = True
        status = {t.id: t for t in snap.transfers}
        for mine in record.transfers:
            theirs = status.get(mine.id)
            if theirs is None or theirs.status == mine.status:
                continue
            was = mine.status
            mine.status = theirs.status
            changed = True
            if theirs.status in VOID_TRANSFER and was not in VOID_TRANSFER:
                record.rejected_transfers += 1
                log.step_failure(
                    "WITHDRAWAL", {"transfer_id": mine.id, "status": theirs.status, "reason": theirs.reason}
                )
            elif theirs.status == COMPLETE_TRANSFER:
                log.step_completion("WITHDRAWAL", {"transfer_id": mine.id, "amount": amount_text(mine.amount)})
            else:
                log.info(f"withdrawal {mine.id}: {was} -> {theirs.status}")
        if changed:
            self._save(record)
        limit = self.settings.closure_max_transfer_attempts
        if record.rejected_transfers >= limit and not snap.closed:
            self._fail(record, f"the withdrawal was rejected or returned {record.rejected_transfers} times", log)

    def _maybe_reliquidate(self, record: ClosureRecord, snap: Snapshot, log: ClosureLog) -> None:
        """Positions left with every order terminal (a sell refused or expired): sell again, at most
        once per trading session and `closure_max_transfer_attempts` times in all."""
        if snap.open_orders or not snap.positions:
            return
        assert record.liquidation_sent_at is not None
        today = self._ny_day(self.clock.now())
        if self._ny_day(record.liquidation_sent_at) >= today:
            return
        if record.liquidations >= self.settings.closure_max_transfer_attempts:
            self._fail(record, f"positions remain after {record.liquidations} liquidations", log)
            return
        log.warning(f"{len(snap.positions)} positions remain with no open order: liquidating again")
        self._liquidate(record, log)

    def _withdraw(self, record: ClosureRecord, snap: Snapshot, log: ClosureLog) -> ClosureTransfer | None:
        """One withdrawal per banking day of at most the daily limit and the withdrawable cash."""
        now = self.clock.now()
        today = self._ny_day(now)
        if not calendar.is_trading_day(today):
            return None
        if any(self._ny_day(t.created_at) == today and t.status not in VOID_TRANSFER for t in record.transfers):
            return None  # today's withdrawal is done; the next waits for the next banking day
        if record.refused_withdrawal_on == today:
            return None  # refused today: asked again on the next banking day, not on every pass
        amount = min(snap.account.cash_withdrawable, self.settings.ach_daily_limit).quantize(CENT)
        if amount <= ZERO:
            return None
        record.pending_withdrawal = PendingWithdrawal(amount=amount, requested_at=now)
        self._save(record)
        log.step_start(
            "WITHDRAW_ALL_FUNDS", {"amount": amount_text(amount), "ach_relationship_id": record.ach_relationship_id}
        )
        started = time.perf_counter()
        try:
            transfer = self.broker.create_transfer(record.account_id, record.ach_relationship_id, amount, "OUTGOING")
        except Rejected as exc:  # refused outright (a bank unlinked, a limit): an attempt like a rejected transfer
            record.pending_withdrawal = None
            record.rejected_transfers += 1
            record.refused_withdrawal_on = today
            log.step_failure("WITHDRAW_ALL_FUNDS", {"error": exc.message, "code": exc.code})
            if record.rejected_transfers >= self.settings.closure_max_transfer_attempts:
                self._fail(record, f"the withdrawal was refused, rejected or returned {record.rejected_transfers} "
                                   f"times (last: {exc.message})", log)
            else:
                self._save(record)
            return None
        log.timing("WITHDRAWAL_OPERATION", time.perf_counter() - started)
        mine = ClosureTransfer(
            id=transfer.id, amount=transfer.amount, status=transfer.status, created_at=transfer.created_at,
            attempt=record.rejected_transfers + 1,
        )
        record.transfers.append(mine)
        record.pending_withdrawal = None
        self._move(record, "partial_withdrawal_waiting", f"withdrawal of {money(amount)} sent", log)
        self._save(record)
        log.broker_data(
            "TRANSFER_DATA", {"id": transfer.id, "amount": amount_text(transfer.amount), "status": transfer.status}
        )
        return mine

    def _close_blockers(self, snap: Snapshot, record: ClosureRecord) -> list[str]:
        problems = []
        if snap.positions:
            problems.append(f"{len(snap.positions)} positions are still open")
        if snap.open_orders:
            problems.append(f"{len(snap.open_orders)} orders are still open")
        if snap.account.cash > MAX_CASH_TO_CLOSE:
            problems.append(f"{money(snap.account.cash)} remaining")
        status = {t.id: t.status for t in snap.transfers}
        if any(in_flight(status.get(t.id, t.status)) for t in record.transfers):
            problems.append("a withdrawal is still in flight")
        return problems

    def _close(self, record: ClosureRecord, snap: Snapshot, log: ClosureLog) -> None:
        problems = self._close_blockers(snap, record)
        log.safety_check("FINAL_CLOSURE_CHECKS", not problems, problems or {"cash": amount_text(snap.account.cash)})
        if problems:
            raise Rejected("account cannot be closed: " + "; ".join(problems), code="close_refused", details=problems)
        log.step_start("CLOSE_ACCOUNT")
        started = time.perf_counter()
        self.broker.close_account(record.account_id)
        log.timing("CLOSE_ACCOUNT_OPERATION", time.perf_counter() - started)
        self._complete(record, log)

    def _complete(self, record: ClosureRecord, log: ClosureLog) -> None:
        """The broker's account is closed: mark the store and the record, send the completion email."""
        self.store.set_account_status(record.account_id, "closed", confirmation_code=record.confirmation_code)
        record.completed_at = self.clock.now()
        self._move(record, "completed", "account closed", log)
        self._save(record)
        log.step_completion("CLOSE_ACCOUNT", {"confirmation_code": record.confirmation_code})
        self._send("COMPLETION_EMAIL", completion_email(record), record, log)
