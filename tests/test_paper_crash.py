"""The paper ledger survives its process being killed at any moment (SIGKILL, no clean-up at all).

A child process trades and withdraws on a real SQLite ledger as fast as it can, saying after each
operation that it returned; the test kills it mid-stream, reopens the file and reconciles the whole
ledger from its activity log (the same independent replay as the property test). Whatever the kill
interrupted is either entirely there or entirely absent.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from paper_support import TUE_MORNING, funded_account, make_broker, set_price, sqlite_url
from test_paper_ledger_properties import reconcile

from brokerage.models import OrderRequest
from engine.clock import ManualClock

CHILD = """
import datetime as dt, sys
from decimal import Decimal
from brokerage.models import OrderRequest
from engine.clock import ManualClock
from paper_support import TUE_MORNING, make_broker

db_url, redis_url, account_id, rel_id = sys.argv[1:5]
clock = ManualClock(TUE_MORNING)
broker = make_broker(db_url, clock, redis_url)
for n in range(1, 100_000):
    clock.advance(dt.timedelta(seconds=1))
    if n % 3 == 0:
        broker.create_transfer(account_id, rel_id, Decimal("1.00"), "OUTGOING")
    else:
        side = "buy" if n % 3 == 1 else "sell"
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side=side, qty=Decimal("0.5")))
    print(n, flush=True)
"""


def test_a_killed_process_leaves_a_ledger_that_reconciles(tmp_path: Path, redis_url: str) -> None:
    set_price(redis_url, "AAPL", 100.0)
    db_url = sqlite_url(tmp_path)
    clock = ManualClock(TUE_MORNING)
    broker = make_broker(db_url, clock, redis_url)
    account_id, rel_id = funded_account(broker, clock, "100000")
    broker.db.close()

    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, redis_url, account_id, rel_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    done = 0
    assert child.stdout is not None
    for line in child.stdout:
        done = int(line)
        if done >= 60:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert done >= 60, child.stderr.read() if child.stderr else "the child stopped early"

    clock.set(TUE_MORNING + dt.timedelta(hours=1))
    again = make_broker(db_url, clock, redis_url)
    reconcile(again, account_id)
    log = again.list_activities(account_id)
    operations = sum(1 for a in log if a.activity_type == "FILL") + len(again.list_transfers(account_id)) - 1
    assert done <= operations <= done + 1  # the one in flight when killed: all there or not at all
    position = {p.symbol: p.qty for p in again.list_positions(account_id)}.get("AAPL", Decimal(0))
    buys = sum(1 for a in log if a.activity_type == "FILL" and a.side == "buy")
    sells = sum(1 for a in log if a.activity_type == "FILL" and a.side == "sell")
    assert position == Decimal("0.5") * (buys - sells)
    # and it keeps working where the killed process left off
    again.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal("1")))
    reconcile(again, account_id)
    again.db.close()
