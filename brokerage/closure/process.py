"""Account closure as the routes and the orchestrator call it: readiness, initiation, the withdrawal and
the final close on request, progress and status views, resume and cancel.

Each operation that acts holds the closure's lock (`ClosureStore.lock`) and goes through the pass of
`brokerage.closure.machine.ClosureMachine` (check the broker, then act), so a request and the
orchestrator's periodic pass never act on one closure at once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from brokerage.closure.emails import initiation_email
from brokerage.closure.machine import ClosureMachine
from brokerage.closure.records import STEP_NUMBER, TOTAL_STEPS, ClosureRecord, HistoryEntry
from brokerage.closure.steps import (
    COMPLETE_TRANSFER,
    STEP_NAMES,
    ZERO,
    Readiness,
    amount_text,
    derive_step,
    in_flight,
    new_confirmation_code,
    withdrawn,
)
from brokerage.errors import Conflict, InvalidRequest, NotFound, Rejected


class ClosureProcess(ClosureMachine):
    """Closure operations the routes call (each raises typed brokerage errors the routes answer with)."""

    # ===========================================================================================
    # readiness and initiation
    # ===========================================================================================
    def readiness(self, account_id: str) -> Readiness:
        account = self.broker.get_account(account_id)
        details: dict[str, Any] = {
            "account_status": account.status,
            "cash": amount_text(account.cash),
            "cash_withdrawable": amount_text(account.cash_withdrawable),
            "equity": amount_text(account.equity),
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
                "cash": amount_text(snap.account.cash),
                "cash_withdrawable": amount_text(snap.account.cash_withdrawable),
                "unsettled": amount_text(unsettled),
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
                    return {"success": True, "transfer_id": sent.id, "amount": amount_text(sent.amount)}
            flying = [t for t in record.transfers if in_flight(t.status)]
            if flying:
                t = flying[-1]
                return {"success": True, "transfer_id": t.id, "amount": amount_text(t.amount)}
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
            "amount": amount_text(t.amount),
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
            "withdrawn": amount_text(withdrawn(record)),
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
                {
                    "id": t.id,
                    "amount": amount_text(t.amount),
                    "status": t.status,
                    "created_at": t.created_at.isoformat(),
                    "attempt": t.attempt,
                }
                for t in record.transfers
            ],
            "withdrawn": amount_text(withdrawn(record)),
            "rejected_transfers": record.rejected_transfers,
            "log": self.records.log_lines(account_id, limit=20),
        }

    def unfinished(self) -> list[str]:
        return [r.account_id for r in self.records.unfinished()]
