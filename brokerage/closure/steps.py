"""The closure's rules without side effects: the broker's truth at the start of a pass (`Snapshot`), the
step it implies (`derive_step`), the names and numbers shown to the user, and the money thresholds."""

from __future__ import annotations

import datetime as dt
import secrets
import string
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from brokerage.closure.records import ClosureRecord, Step
from brokerage.models import BrokerAccount, BrokerPosition, Order, Transfer

ZERO = Decimal(0)
CENT = Decimal("0.01")
MAX_CASH_TO_CLOSE = Decimal("1.00")
ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
VOID_TRANSFER = frozenset(("CANCELED", "REJECTED", "RETURNED"))
COMPLETE_TRANSFER = "COMPLETE"
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


def amount_text(value: Decimal) -> str:
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


def withdrawn(record: ClosureRecord) -> Decimal:
    return sum((t.amount for t in record.transfers if t.status == COMPLETE_TRANSFER), ZERO)
