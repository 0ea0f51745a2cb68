"""`clera closure monitor` as a real subprocess over a closure store seeded through ClosureStore and
ClosureLog (the writers the closure itself uses): each flag, the log-file fallback, the colours."""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from brokerage.closure.log import ClosureLog
from brokerage.closure.monitor_style import line_style
from brokerage.closure.records import (
    ClosureRecord,
    ClosureStore,
    ClosureTransfer,
    HistoryEntry,
)
from brokerage.sql import Database
from engine.clock import ManualClock

CLERA = Path(sys.executable).parent / "clera"
START = dt.datetime(2025, 7, 9, 14, 30, tzinfo=dt.UTC)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Seeded:
    data: Path
    store: ClosureStore
    logs: dict[str, ClosureLog]
    clock: ManualClock

    @property
    def log_folder(self) -> Path:
        return self.data / "logs" / "account_closures"


def _record(account: str, user: str, step: str, started: dt.datetime, **more) -> ClosureRecord:
    more.setdefault("history", [HistoryEntry(step="initiated", at=started, message=f"closure of {account} initiated")])
    return ClosureRecord(
        account_id=account,
        user_id=user,
        ach_relationship_id=f"rel-{account}",
        confirmation_code=f"CLA-{account.upper()}",
        step=step,
        initiated_at=started,
        updated_at=started + dt.timedelta(days=1),
        email=f"{user}@example.com",
        **more,
    )


def _seed(data: Path) -> Seeded:
    store = ClosureStore(Database.for_settings(None, data / "clera.db"))
    store.migrate()
    clock = ManualClock(START)
    seeded = Seeded(data, store, {}, clock)

    def log(account: str, started: dt.datetime) -> ClosureLog:
        seeded.logs[account] = ClosureLog(account, started, seeded.log_folder, clock, store)
        return seeded.logs[account]

    # user-1: an older completed closure and a running one
    old = START - dt.timedelta(days=30)
    store.save(_record("acct-old", "user-1", "completed", old, completed_at=old + dt.timedelta(days=5), transfers=[
        ClosureTransfer(id="tr-old", amount=Decimal("5000"), status="COMPLETE", created_at=old)]))
    done = log("acct-old", old)
    clock.set(old)
    done.step_start("ACCOUNT_CLOSURE_INITIATION", {"account_id": "acct-old"})
    done.step_completion("CLOSE_ACCOUNT", {"closed": True})
    done.line("📋", "Current Step: completed (account closed)")  # what ClosureProcess logs on every move

    store.save(_record(
        "acct-run", "user-1", "waiting_settlement", START,
        history=[HistoryEntry(step="initiated", at=START, message="closure initiated"),
                 HistoryEntry(step="liquidating_positions", at=START, message="liquidation sent: 3 positions"),
                 HistoryEntry(step="waiting_settlement", at=START + dt.timedelta(hours=1), message="waiting for T+1")],
    ))
    run = log("acct-run", START)
    clock.set(START)
    run.step_start("ACCOUNT_CLOSURE_INITIATION", {"account_id": "acct-run", "user_id": "user-1"})
    run.safety_check("ACCOUNT_READINESS", True, {"status": "ACTIVE"})
    run.email_attempt("INITIATION_EMAIL", "user-1@example.com", True)
    run.timing("LIQUIDATION_OPERATION", 0.25)
    run.warning("transfer tr-1 REJECTED, retrying (attempt 2 of 3)")
    run.error("LIQUIDATION check FAILED once")
    for n in range(20):
        clock.advance(dt.timedelta(minutes=1))
        run.info(f"settlement check {n}: waiting for T+1")
    run.account_snapshot("ACTIVE", Decimal("98013.88"), Decimal("0"), 0, 0, "waiting_settlement")

    # user-2: a failed closure; user-3: one withdrawing
    store.save(_record("acct-bad", "user-2", "failed", START - dt.timedelta(days=2),
                       failure_reason="transfer rejected 3 times"))
    bad = log("acct-bad", START - dt.timedelta(days=2))
    bad.line("📋", "Current Step: failed (transfer rejected 3 times)")
    bad.step_failure("WITHDRAW_ALL_FUNDS", {"reason": "rejected 3 times"})
    store.save(_record("acct-wd", "user-3", "withdrawing_funds", START - dt.timedelta(days=1), transfers=[
        ClosureTransfer(id="tr-wd-1", amount=Decimal("50000"), status="COMPLETE", created_at=START),
        ClosureTransfer(id="tr-wd-2", amount=Decimal("50000"), status="QUEUED", created_at=START)]))
    wd = log("acct-wd", START - dt.timedelta(days=1))
    wd.line("📋", "Current Step: withdrawing_funds (settled)")
    wd.info("WITHDRAW_ALL_FUNDS chunk 2 of 3 sent")
    return seeded


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return _seed(tmp_path / "data")


def _env(data: Path, color: bool = False) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NO_COLOR", "FORCE_COLOR", "CLERA_SMTP_HOST")
    }
    env.update({"CLERA_DATA_DIR": str(data), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    if color:
        env.update({"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    else:
        env["NO_COLOR"] = "1"
    return env


def monitor(data: Path, *args: str, color: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLERA), "closure", "monitor", *args], env=_env(data, color), cwd=data.parent,
        capture_output=True, text=True, timeout=60,
    )


def log_lines(output: str) -> list[str]:
    """The log lines in the output (they start with their timestamp)."""
    return [line.strip() for line in ANSI.sub("", output).splitlines() if re.match(r"\s*\[\d{4}-\d\d-\d\d ", line)]


# --- --account ------------------------------------------------------------------------------
def test_account_shows_its_lines_in_order(seeded: Seeded) -> None:
    result = monitor(seeded.data, "--account", "acct-run")
    assert result.returncode == 0, result.stderr
    expected = seeded.store.log_lines("acct-run")
    assert len(expected) == 30 and log_lines(result.stdout) == expected
    assert "acct-run" in result.stdout and "waiting_settlement" in result.stdout and "CLA-ACCT-RUN" in result.stdout
    assert "acct-old" not in result.stdout  # another closure's lines stay out


def test_lines_limits_to_the_last_n(seeded: Seeded) -> None:
    result = monitor(seeded.data, "--account", "acct-run", "--lines", "3")
    assert result.returncode == 0, result.stderr
    assert log_lines(result.stdout) == seeded.store.log_lines("acct-run")[-3:]
    assert "Current Step: waiting_settlement" in log_lines(result.stdout)[-1]


def test_unknown_account_is_a_clear_error(seeded: Seeded) -> None:
    result = monitor(seeded.data, "--account", "acct-nope")
    assert result.returncode == 1
    assert "no closure found for account acct-nope" in result.stderr and result.stdout == ""
    user = monitor(seeded.data, "--user", "nobody")
    assert user.returncode == 1 and "no closure found for user nobody" in user.stderr


def test_usage_errors(seeded: Seeded) -> None:
    assert monitor(seeded.data).returncode == 2
    assert monitor(seeded.data, "--account", "acct-run", "--all").returncode == 2
    assert monitor(seeded.data, "--user", "user-1", "--follow").returncode == 2
    assert monitor(seeded.data, "--account", "acct-run", "--lines", "-1").returncode == 2
    assert monitor(seeded.data, "--lines", "ten", "--all").returncode == 2  # argparse


def test_follow_prints_new_lines_until_interrupted(seeded: Seeded) -> None:
    proc = subprocess.Popen(
        [str(CLERA), "closure", "monitor", "--account", "acct-run", "--follow", "--lines", "2", "--interval", "0.1"],
        env=_env(seeded.data), cwd=seeded.data.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C must reach it as from a terminal, even when this suite runs as a background job (whose shell
        # starts it with SIGINT ignored, a disposition every child would inherit)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        _wait_for(lambda: any("following acct-run" in line for line in seen), proc)
        assert len(log_lines("".join(seen))) == 2  # the backlog, cut to --lines
        run = seeded.logs["acct-run"]
        seeded.clock.advance(dt.timedelta(days=1))
        run.info("SETTLEMENT settled after T+1")
        run.email_attempt("COMPLETION_EMAIL", "user-1@example.com", True)
        _wait_for(lambda: any("COMPLETION_EMAIL" in line for line in seen), proc)
        other = seeded.logs["acct-wd"]
        other.info("a line of another closure")
        run.info("the last line")
        _wait_for(lambda: any("the last line" in line for line in seen), proc)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    reader.join(timeout=5)
    shown = log_lines("".join(seen))
    assert shown == seeded.store.log_lines("acct-run")[-5:]  # 2 of the backlog, then each new line once
    assert not any("another closure" in line for line in seen)


def _wait_for(condition, proc: subprocess.Popen[str], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, (
            f"the monitor exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
        )
        assert time.monotonic() < deadline, "timed out waiting for the monitor's output"
        time.sleep(0.05)


# --- --user / positional -----------------------------------------------------------------------
def test_user_shows_every_closure_newest_first(seeded: Seeded) -> None:
    result = monitor(seeded.data, "--user", "user-1")
    assert result.returncode == 0, result.stderr
    assert log_lines(result.stdout) == seeded.store.log_lines("acct-run") + seeded.store.log_lines("acct-old")
    assert "acct-bad" not in result.stdout and "acct-wd" not in result.stdout
    positional = monitor(seeded.data, "user-1")
    assert positional.returncode == 0 and positional.stdout == result.stdout


def test_user_recent_is_the_newest_closures_last_lines(seeded: Seeded) -> None:
    recent = monitor(seeded.data, "user-1", "--recent", "--lines", "10")  # the seed's example
    assert recent.returncode == 0, recent.stderr
    assert log_lines(recent.stdout) == seeded.store.log_lines("acct-run")[-10:]
    assert "acct-old" not in recent.stdout
    default = monitor(seeded.data, "--user", "user-1", "--recent")
    assert log_lines(default.stdout) == seeded.store.log_lines("acct-run")[-20:]


def test_user_summary_shows_step_and_progress(seeded: Seeded) -> None:
    result = monitor(seeded.data, "--user", "user-1", "--summary")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert log_lines(out) == []  # a summary, not the log
    running, finished = out.index("acct-run"), out.index("acct-old")
    assert running < finished
    assert "waiting_settlement" in out and "step 2/5" in out and "2/5" in out and "CLA-ACCT-RUN" in out
    assert "liquidation sent: 3 positions" in out and "waiting for T+1" in out  # the history
    assert "completed" in out and "step 5/5" in out and "$5,000.00" in out
    account = monitor(seeded.data, "--account", "acct-wd", "--summary")
    assert account.returncode == 0
    assert "withdrawing_funds" in account.stdout and "step 3/5" in account.stdout
    assert "$50,000.00 in 1 completed of 2 transfers" in account.stdout and "tr-wd-2" in account.stdout
    failed = monitor(seeded.data, "--account", "acct-bad", "--summary")
    assert "failed" in failed.stdout and "transfer rejected 3 times" in failed.stdout


# --- --all ----------------------------------------------------------------------------------
def test_all_lists_the_unfinished_closures(seeded: Seeded) -> None:
    result = monitor(seeded.data, "--all")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "unfinished closures: 2" in out and "of 4 in the store" in out
    assert "acct-run" in out and "acct-wd" in out and "waiting_settlement" in out and "withdrawing_funds" in out
    assert "acct-old" not in out and "acct-bad" not in out
    assert "chunk 2 of 3 sent" in out  # each one's last line


# --- colours --------------------------------------------------------------------------------
def test_lines_are_colour_coded(seeded: Seeded) -> None:
    result = monitor(seeded.data, "--account", "acct-run", color=True)
    assert result.returncode == 0, result.stderr
    colour = {"blue": "34", "green": "32", "yellow": "33", "red": "31", "cyan": "36", "magenta": "35"}
    wanted = {
        "ACCOUNT_CLOSURE_INITIATION STARTED": "green", "SAFETY CHECK ACCOUNT_READINESS": "green",
        "INITIATION_EMAIL to": "cyan", "LIQUIDATION_OPERATION took": "magenta", "REJECTED, retrying": "yellow",
        "LIQUIDATION check FAILED": "red", "settlement check 0:": "blue", "Cash Balance": "blue",
    }
    for marker, name in wanted.items():
        (line,) = [line for line in result.stdout.splitlines() if marker in line]
        codes = set(re.findall(r"\x1b\[([0-9;]*)m", line))
        assert colour[name] in codes, (marker, name, line)
        assert not (set(colour.values()) - {colour[name]}) & codes, (marker, line)


def test_line_style() -> None:
    assert line_style("[2025-07-09 10:33:07] 🔄 RESUME_CLOSURE_PROCESS STARTED") == "blue"
    assert line_style("[2025-07-09 10:33:07] ✅ WITHDRAW_ALL_FUNDS STARTED") == "green"
    assert line_style("[2025-07-09 10:33:08] 📧 Email sent: withdrawal_initiated@example.com") == "cyan"
    assert line_style("📧 COMPLETION_EMAIL to a@b.c: FAILED {\"error\": \"refused\"}") == "red"
    assert line_style("🛡️ SAFETY CHECK LIQUIDATION_SUCCESS: ❌ FAILED") == "red"
    assert line_style("⚠️ ACH transfer returned, retry 2") == "yellow"
    assert line_style("⏱️ LIQUIDATION_OPERATION took 1.200s") == "magenta"
    assert line_style("📋 Current Step: failed") == "red"
    assert line_style("📋 Current Step: completed") == "green"
    assert line_style("💰 Cash Balance: $98,013.88") == "blue"


# --- without the store ------------------------------------------------------------------------
def test_falls_back_to_the_log_files(seeded: Seeded, tmp_path: Path) -> None:
    files_only = tmp_path / "files-only"
    (files_only / "logs").mkdir(parents=True)
    (seeded.log_folder).rename(files_only / "logs" / "account_closures")
    result = monitor(files_only, "--account", "acct-run", "--lines", "4")
    assert result.returncode == 0, result.stderr
    assert log_lines(result.stdout) == seeded.store.log_lines("acct-run")[-4:]
    assert "log files in" in result.stdout
    summary = monitor(files_only, "--account", "acct-run", "--summary")
    assert "waiting_settlement" in summary.stdout and "step 2/5" in summary.stdout
    user = monitor(files_only, "user-1", "--recent", "--lines", "1")  # the user id is in the initiation line
    assert user.returncode == 0 and log_lines(user.stdout) == seeded.store.log_lines("acct-run")[-1:]
    every = monitor(files_only, "--all")
    assert every.returncode == 0 and "acct-run" in every.stdout and "acct-wd" in every.stdout
    assert "acct-old" not in every.stdout and "acct-bad" not in every.stdout
    assert "waiting_settlement" in every.stdout and "withdrawing_funds" in every.stdout
    assert monitor(files_only, "--account", "acct-nope").returncode == 1
    assert not (files_only / "clera.db").exists()  # the monitor only reads: no database was created


def test_a_store_without_closure_tables_falls_back(seeded: Seeded, tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "logs").mkdir(parents=True)
    seeded.log_folder.rename(other / "logs" / "account_closures")
    Database.for_settings(None, other / "clera.db").execute("CREATE TABLE unrelated (x INTEGER)")
    result = monitor(other, "--account", "acct-bad")
    assert result.returncode == 0, result.stderr
    assert "closure store not readable" in result.stdout and "WITHDRAW_ALL_FUNDS FAILED" in result.stdout
    tables = Database.for_settings(None, other / "clera.db").fetchall(
        "SELECT name FROM sqlite_master WHERE type='table'"
    )
    assert {t["name"] for t in tables} == {"unrelated"}  # nothing migrated by the monitor


def test_reads_a_postgresql_store(pg_url: str, tmp_path: Path) -> None:
    """On a cluster the store is DATABASE_URL: the monitor reads it there (this machine has no log files)."""
    store = ClosureStore(Database(pg_url))
    store.migrate()
    store.save(_record("acct-pg", "user-pg", "closing_account", START))
    clock = ManualClock(START)
    ClosureLog("acct-pg", START, tmp_path / "elsewhere", clock, store).step_start("CLOSE_ACCOUNT")
    data = tmp_path / "data"
    env = {**_env(data), "DATABASE_URL": pg_url}
    run = functools.partial(subprocess.run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    account = run([str(CLERA), "closure", "monitor", "--account", "acct-pg", "--summary"])
    assert account.returncode == 0, account.stderr
    assert "closing_account" in account.stdout and "step 4/5" in account.stdout and "closure store" in account.stdout
    lines = run([str(CLERA), "closure", "monitor", "--account", "acct-pg"])
    assert log_lines(lines.stdout) == store.log_lines("acct-pg") and len(log_lines(lines.stdout)) == 1
    every = run([str(CLERA), "closure", "monitor", "--all"])
    assert "unfinished closures: 1" in every.stdout and "acct-pg" in every.stdout
    assert not data.exists()  # nothing written locally
