"""The closure log: one file per closure, the same lines in the closure store.

`logs/account_closures/closure_{account}_{YYYYmmdd_HHMMSS}.log` under the data directory, named
after the closure's initiation time, so every process that resumes the closure appends to the same
file. Each line is `[YYYY-mm-dd HH:MM:SS] <icon> <text>` on the market clock; the icons are what
the monitor colours (🔍 info, ✅ success, ⚠️ warning, ❌ failure, 📧 email, ⏱️ timing). A node's disk
is not shared on a cluster, so every line also goes to `ClosureStore.add_log`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from brokerage.closure.records import ClosureStore
from engine.clock import Clock

log = logging.getLogger(__name__)

_FILE_LOCK = threading.Lock()


def log_file_name(account_id: str, initiated_at: dt.datetime) -> str:
    return f"closure_{account_id}_{initiated_at.strftime('%Y%m%d_%H%M%S')}.log"


def _compact(data: Any) -> str:
    try:
        return json.dumps(msgspec.to_builtins(data, enc_hook=str), default=str, separators=(", ", ": "))
    except (TypeError, ValueError):
        return str(data)


def money(value: Decimal) -> str:
    return f"${value:,.2f}"


class ClosureLog:
    def __init__(
        self, account_id: str, initiated_at: dt.datetime, folder: Path, clock: Clock, records: ClosureStore
    ) -> None:
        self.account_id = account_id
        self.path = folder / log_file_name(account_id, initiated_at)
        self.clock = clock
        self.records = records

    # -- the one writer ----------------------------------------------------------------------
    def line(self, icon: str, text: str) -> str:
        at = self.clock.now()
        line = f"[{at.strftime('%Y-%m-%d %H:%M:%S')}] {icon} {text}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _FILE_LOCK, self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:  # a full disk must not stop a closure: the store keeps the line
            log.warning("closure log file %s: %s", self.path, exc)
        self.records.add_log(self.account_id, at, line)
        log.info("closure: %s", text, extra={"account_id": self.account_id})
        return line

    # -- the seed's logging methods ------------------------------------------------------------
    def info(self, text: str) -> None:
        self.line("🔍", text)

    def warning(self, text: str) -> None:
        self.line("⚠️", text)

    def error(self, text: str) -> None:
        self.line("❌", text)

    def step_start(self, name: str, data: Any = None) -> None:
        self.line("✅", f"{name} STARTED" + (f" {_compact(data)}" if data is not None else ""))

    def step_completion(self, name: str, result: Any = None) -> None:
        self.line("✅", f"{name} COMPLETED" + (f" {_compact(result)}" if result is not None else ""))

    def step_failure(self, name: str, error: Any = None) -> None:
        self.line("❌", f"{name} FAILED" + (f" {_compact(error)}" if error is not None else ""))

    def broker_data(self, label: str, data: Any) -> None:
        self.line("🔍", f"{label}: {_compact(data)}")

    def account_snapshot(
        self, status: str, cash: Decimal, withdrawable: Decimal, positions: int, open_orders: int, step: str
    ) -> None:
        self.line("📊", f"Account Status: {status}")
        self.line("💰", f"Cash Balance: {money(cash)} (withdrawable {money(withdrawable)})")
        self.line("📈", f"Open Positions: {positions}, Open Orders: {open_orders}")
        self.line("📋", f"Current Step: {step}")

    def safety_check(self, name: str, passed: bool, details: Any = None) -> None:
        result = "✅ PASSED" if passed else "❌ FAILED"
        self.line("🛡️", f"SAFETY CHECK {name}: {result}" + (f" {_compact(details)}" if details is not None else ""))

    def email_attempt(self, kind: str, recipient: str | None, success: bool, details: Any = None) -> None:
        outcome = "sent" if success else "FAILED"
        self.line(
            "📧", f"{kind} to {recipient or '(no address)'}: {outcome}" + (f" {_compact(details)}" if details else "")
        )

    def timing(self, name: str, seconds: float) -> None:
        self.line("⏱️", f"{name} took {seconds:.3f}s")
