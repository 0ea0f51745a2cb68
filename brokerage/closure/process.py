"""The closure state machine: check the broker, then act; one idempotent pass at a time.

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
import secrets
import string
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from brokerage.broker import Broker
from brokerage.closure.emails import completion_email, failure_email, initiation_email
from brokerage.closure.log import ClosureLog, money
from brokerage.closure.records import (
    STEP_NUMBER,
    TOTAL_STEPS,
    ClosureRecord,
    ClosureStore,
    ClosureTransfer,
    HistoryEntry,
    PendingWithdrawal,
    Step,
)
from brokerage.email import Email, Mailer
from brokerage.errors import Conflict, InvalidRequest, NotFound, Rejected
from brokerage.models import BrokerAccount, BrokerPosition, Order, Transfer
from brokerage.paper_rules import new_york_date
from brokerage.store import Store
from engine import calendar
from engine.clock import Clock
from engine.config import Settings

ZERO = Decimal(0)
CENT = Decimal("0.01")
MAX_CASH_TO_CLOSE = Decimal("1.00")
ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
VOID_TRANSFER = frozenset(("CANCELED", "REJECTED", "RETURNED"))
COMPLETE_TRANSFER = "COMPLETE"
TERMINAL_ORDER = frozenset(("filled", "canceled", "expired", "rejected", "replaced", "done_for_day"))
# an outcome found at the broker may be stamped by its own clock: allow this much skew
SKEW = dt.timedelta(minutes=1)
_CODE_ALPHABET = string.ascii_uppercase + string.digits

STEP_NAMES: dict[str, str] = {
    "initiated": "Closure initiated",
    "canceling_orders": "Canceling orders",
    "liquidating_positions": "Liquidating positions",
    "waiting_settlement": "Waiting for settlement (T+1)",
    "withdrawing_funds": "Withdrawing funds",
    "partial_withdrawal_waiting": "Waiting for a withdrawal to complete",
    "closing_account": "Closing the account",
    "completed": "Account closed",
    "failed": "Closure failed",
}


class Readiness(msgspec.Struct):
    ready: bool
    reason: str
    details: dict[str, Any]


@dataclass
class Snapshot:
    """The broker's truth at the start of a pass."""

    account: BrokerAccount
    positions: list[BrokerPosition]
    open_orders: list[Order]
    transfers: list[Transfer]

    @property
    def closed(self) -> bool:
        return self.account.status == ACCOUNT_CLOSED


def _s(value: Decimal) -> str:
    return str(value.quantize(CENT))


def new_confirmation_code() -> str:
    return "CLA-" + "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))


def in_flight(status: str) -> bool:
    return status != COMPLETE_TRANSFER and status not in VOID_TRANSFER


def derive_step(snap: Snapshot, record: ClosureRecord) -> Step:
    """The current step from the broker's truth and the record (see the module docstring)."""
    if snap.closed:
        return "completed"
    if record.step == "failed":
        return "failed"
    if record.liquidation_sent_at is None:
        return "initiated"
    if snap.open_orders or snap.positions:
        return "liquidating_positions"
    status = {t.id: t.status for t in snap.transfers}
    if any(in_flight(status.get(t.id, t.status)) for t in record.transfers):
        return "partial_withdrawal_waiting"
    cash, withdrawable = snap.account.cash, snap.account.cash_withdrawable
    if cash <= MAX_CASH_TO_CLOSE:
        return "closing_account"
    if withdrawable < cash:
        return "waiting_settlement"
    return "withdrawing_funds"


class ClosureProcess:
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

    # ===========================================================================================
    # readiness and initiation
    # ===========================================================================================
    def readiness(self, account_id: str) -> Readiness:
        account = self.broker.get_account(account_id)
        details: dict[str, Any] = {
            "account_status": account.status,
            "cash": _s(account.cash),
            "cash_withdrawable": _s(account.cash_withdrawable),
            "equity": _s(account.equity),
        }
        if account.status != "ACTIVE":
            return Readiness(False, f"account status is {account.status}, not ACTIVE", details)
        existing = self.records.get(account_id)
        if existing is not None and not existing.finished:
            details["step"] = existing.step
            return Readiness(False, "a closure of this account is already in progress", details)
        rels = self.broker.list_ach_relationships(account_id)
        approved = [r.id for r in rels if r.status == "APPROVED"]
        details["ach_relationships"] = [{"id": r.id, "status": r.status, "nickname": r.nickname} for r in rels]
        details["positions"] = len(self.broker.list_positions(account_id))
        details["open_orders"] = len(self.broker.list_orders(account_id, "open"))
        details["pattern_day_trader"] = account.pattern_day_trader
        if not approved:
            return Readiness(False, "no approved bank account (ACH relationship) to withdraw the funds to", details)
        if self.settings.closure_pdt_check and account.pattern_day_trader and account.equity < Decimal(25000):
            return Readiness(False, "pattern day trader with equity under $25,000", details)
        return Readiness(True, "account is ready for closure", details)

    def initiate(self, account_id: str, user_id: str, ach_relationship_id: str) -> dict[str, Any]:
        if not isinstance(ach_relationship_id, str) or not ach_relationship_id.strip():
            raise InvalidRequest("ach_relationship_id is required", details={"field": "ach_relationship_id"})
        with self.records.lock(account_id):
            existing = self.records.get(account_id)
            if existing is not None and not existing.finished:
                raise Conflict("a closure of this account is already in progress", code="closure_in_progress")
            account = self.broker.get_account(account_id)
            if account.status != "ACTIVE":
                raise Rejected(f"account status is {account.status}, not ACTIVE", code="account_not_active")
            rel = next((r for r in self.broker.list_ach_relationships(account_id) if r.id == ach_relationship_id), None)
            if rel is None:
                raise NotFound(f"ACH relationship {ach_relationship_id} not found", code="ach_not_found")
            if rel.status != "APPROVED":
                raise Rejected(f"ACH relationship is {rel.status}, not APPROVED", code="ach_not_approved")
            if self.settings.closure_pdt_check and account.pattern_day_trader and account.equity < Decimal(25000):
                raise Rejected("pattern day trader with equity under $25,000", code="pdt_restricted")
            now = self.clock.now()
            record = ClosureRecord(
                account_id=account_id,
                user_id=user_id,
                ach_relationship_id=ach_relationship_id,
                confirmation_code=new_confirmation_code(),
                initiated_at=now,
                updated_at=now,
                email=account.email,
                owner_name=account.owner_name,
                history=[HistoryEntry(step="initiated", at=now, message="closure initiated")],
            )
            log = self.log_for(record)
            log.step_start("ACCOUNT_CLOSURE_INITIATION", {"account_id": account_id, "user_id": user_id})
            log.safety_check("ACCOUNT_READINESS", True, {"status": account.status, "ach_relationship": rel.id})
            self.store.set_account_status(account_id, "pending_closure", confirmation_code=record.confirmation_code)
            log.info(f"store status pending_closure, confirmation {record.confirmation_code}")
            self._save(record)
            snap = self._snapshot(account_id)
            log.account_snapshot(
                snap.account.status, snap.account.cash, snap.account.cash_withdrawable,
                len(snap.positions), len(snap.open_orders), record.step,
            )
            self._liquidate(record, log)
            self._send("INITIATION_EMAIL", initiation_email(record), record, log)
            log.step_completion("ACCOUNT_CLOSURE_INITIATION", {"confirmation_code": record.confirmation_code})
            return {
                "success": True,
                "step": record.step,
                "message": "Account closure initiated: orders canceled and positions liquidating",
                "confirmation_code": record.confirmation_code,
            }

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
                log.step_completion("WITHDRAWAL", {"transfer_id": mine.id, "amount": _s(mine.amount)})
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
        log.step_start("WITHDRAW_ALL_FUNDS", {"amount": _s(amount), "ach_relationship_id": record.ach_relationship_id})
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
        log.broker_data("TRANSFER_DATA", {"id": transfer.id, "amount": _s(transfer.amount), "status": transfer.status})
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
        log.safety_check("FINAL_CLOSURE_CHECKS", not problems, problems or {"cash": _s(snap.account.cash)})
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

    # ===========================================================================================
    # route-facing
    # ===========================================================================================
    def settlement_status(self, account_id: str) -> dict[str, Any]:
        record = self._require(account_id)
        snap = self._snapshot(account_id)
        unsettled = max(snap.account.cash - snap.account.cash_withdrawable, ZERO)
        settled = not snap.positions and not snap.open_orders and unsettled == ZERO
        return {
            "settled": settled,
            "details": {
                "step": derive_step(snap, record) if not record.finished else record.step,
                "positions": len(snap.positions),
                "open_orders": len(snap.open_orders),
                "cash": _s(snap.account.cash),
                "cash_withdrawable": _s(snap.account.cash_withdrawable),
                "unsettled": _s(unsettled),
            },
        }

    def withdraw_funds(self, account_id: str) -> dict[str, Any]:
        """Sends today's withdrawal if the funds are settled; answers the one in flight if there is one."""
        with self.records.lock(account_id):
            record = self._require(account_id)
            if record.finished:
                raise Conflict(f"the closure is {record.step}", code="closure_finished")
            log = self.log_for(record)
            snap = self._snapshot(account_id)
            self._reconcile(record, snap, log)
            if record.finished:
                raise Conflict(f"the closure is {record.step}: {record.failure_reason}", code="closure_finished")
            step = derive_step(snap, record)
            if step == "withdrawing_funds":
                if self._move(record, step, "settled cash to withdraw", log):
                    self._save(record)
                sent = self._withdraw(record, snap, log)
                if sent is not None:
                    return {"success": True, "transfer_id": sent.id, "amount": _s(sent.amount)}
            flying = [t for t in record.transfers if in_flight(t.status)]
            if flying:
                t = flying[-1]
                return {"success": True, "transfer_id": t.id, "amount": _s(t.amount)}
            reasons = {
                "initiated": "the liquidation has not been sent yet",
                "liquidating_positions": "positions are still being liquidated",
                "waiting_settlement": "the sale proceeds have not settled yet (T+1)",
                "withdrawing_funds": "today's withdrawal was already made; the next goes on the next banking day",
                "closing_account": "there is nothing left to withdraw",
            }
            raise Rejected(f"cannot withdraw now: {reasons.get(step, step)}", code="withdrawal_not_ready",
                           details={"step": step})

    def withdrawal_status(self, account_id: str, transfer_id: str) -> dict[str, Any]:
        record = self._require(account_id)
        if not any(t.id == transfer_id for t in record.transfers):
            raise NotFound(f"transfer {transfer_id} is not a withdrawal of this closure", code="transfer_not_found")
        t = self.broker.get_transfer(account_id, transfer_id)
        return {
            "transfer_id": t.id,
            "status": t.status,
            "amount": _s(t.amount),
            "complete": t.status == COMPLETE_TRANSFER,
            "reason": t.reason,
            "created_at": t.created_at.isoformat(),
            "updated_at": t.updated_at.isoformat(),
        }

    def close_account(self, account_id: str) -> dict[str, Any]:
        with self.records.lock(account_id):
            record = self._require(account_id)
            if record.step == "completed":
                return {"success": True, "message": "the account is closed"}
            if record.step == "failed":
                raise Conflict(f"the closure failed: {record.failure_reason}", code="closure_finished")
            log = self.log_for(record)
            snap = self._snapshot(account_id)
            self._reconcile(record, snap, log)  # the withdrawals' last statuses, before the record is final
            if snap.closed:
                self._complete(record, log)
                return {"success": True, "message": "the account is closed"}
            self._close(record, snap, log)
            return {"success": True, "message": "the account is closed"}

    def progress(self, account_id: str) -> dict[str, Any]:
        record = self._require(account_id)
        return {
            "account_id": account_id,
            "step": record.step,
            "step_number": STEP_NUMBER[record.step],
            "total_steps": TOTAL_STEPS,
            "step_name": STEP_NAMES[record.step],
            "history": [{"step": h.step, "at": h.at.isoformat(), "message": h.message} for h in record.history],
            "confirmation_code": record.confirmation_code,
            "initiated_at": record.initiated_at.isoformat(),
            "completed_at": record.completed_at.isoformat() if record.completed_at else None,
            "failure_reason": record.failure_reason,
            "withdrawn": _s(_withdrawn(record)),
        }

    def resume(self, account_id: str) -> dict[str, Any]:
        record = self.advance(account_id)
        if record.step == "failed":
            return {"success": False, "step": record.step, "message": record.failure_reason or "the closure failed"}
        return {"success": True, "step": record.step, "message": STEP_NAMES[record.step]}

    def cancel(self, account_id: str) -> dict[str, Any]:
        with self.records.lock(account_id):
            record = self._require(account_id)
            if record.finished:
                raise Conflict(f"the closure is already {record.step}", code="closure_finished")
            log = self.log_for(record)
            snap = self._snapshot(account_id)
            self._reconcile(record, snap, log)
            if record.liquidation_sent_at is not None:
                raise Conflict(
                    "the liquidation was already sent: the closure can no longer be canceled",
                    code="closure_in_progress",
                )
            self.store.set_account_status(account_id, "active")
            record.failure_reason = "canceled by the account holder"
            self._move(record, "failed", "closure canceled before liquidation", log)
            self._save(record)
            log.step_completion("CANCEL_CLOSURE")
            return {"success": True, "message": "the account closure was canceled"}

    def status(self, account_id: str) -> dict[str, Any]:
        record = self._require(account_id)
        account = self.store.get_account(account_id)
        return {
            "account_id": account_id,
            "user_id": record.user_id,
            "step": record.step,
            "step_number": STEP_NUMBER[record.step],
            "total_steps": TOTAL_STEPS,
            "step_name": STEP_NAMES[record.step],
            "confirmation_code": record.confirmation_code,
            "account_status": account.status if account else None,
            "initiated_at": record.initiated_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
            "completed_at": record.completed_at.isoformat() if record.completed_at else None,
            "failure_reason": record.failure_reason,
            "liquidation_sent_at": record.liquidation_sent_at.isoformat() if record.liquidation_sent_at else None,
            "transfers": [
                {"id": t.id, "amount": _s(t.amount), "status": t.status, "created_at": t.created_at.isoformat(),
                 "attempt": t.attempt}
                for t in record.transfers
            ],
            "withdrawn": _s(_withdrawn(record)),
            "rejected_transfers": record.rejected_transfers,
            "log": self.records.log_lines(account_id, limit=20),
        }

    def unfinished(self) -> list[str]:
        return [r.account_id for r in self.records.unfinished()]


def _withdrawn(record: ClosureRecord) -> Decimal:
    return sum((t.amount for t in record.transfers if t.status == COMPLETE_TRANSFER), ZERO)
