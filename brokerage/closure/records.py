"""What a closure persists after every step, and where (the store's database: SQLite or DATABASE_URL).

The current step is always derived again from the broker's truth; the record adds what the broker
cannot tell: that this closure sent its liquidation, which withdrawals are its own, how many times a
transfer was retried, the confirmation code, and the history and log lines operators read.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

import msgspec

Step = Literal[
    "initiated",
    "canceling_orders",
    "liquidating_positions",
    "waiting_settlement",
    "withdrawing_funds",
    "partial_withdrawal_waiting",
    "closing_account",
    "completed",
    "failed",
]
FINISHED: frozenset[str] = frozenset(("completed", "failed"))
# The seed's progress numbering (GET progress): 5 steps after `initiated`.
STEP_NUMBER: dict[str, int] = {
    "initiated": 0,
    "canceling_orders": 1,
    "liquidating_positions": 1,
    "waiting_settlement": 2,
    "withdrawing_funds": 3,
    "partial_withdrawal_waiting": 3,
    "closing_account": 4,
    "completed": 5,
    "failed": -1,
}
TOTAL_STEPS = 5


class HistoryEntry(msgspec.Struct, kw_only=True):
    step: Step
    at: dt.datetime
    message: str


class ClosureTransfer(msgspec.Struct, kw_only=True):
    """A withdrawal this closure made: the broker's transfer id, the amount, its last known status."""

    id: str
    amount: Decimal
    status: str
    created_at: dt.datetime
    attempt: int = 1


class ClosureRecord(msgspec.Struct, kw_only=True):
    account_id: str
    user_id: str
    ach_relationship_id: str
    confirmation_code: str
    step: Step = "initiated"
    initiated_at: dt.datetime
    updated_at: dt.datetime
    email: str | None = None
    owner_name: str | None = None
    liquidation_sent_at: dt.datetime | None = None
    transfers: list[ClosureTransfer] = []
    rejected_transfers: int = 0
    completed_at: dt.datetime | None = None
    failure_reason: str | None = None
    history: list[HistoryEntry] = []

    @property
    def finished(self) -> bool:
        return self.step in FINISHED
