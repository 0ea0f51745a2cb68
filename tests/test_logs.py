"""CLERA_LOG_FORMAT=json: one JSON object a line, with the account a record is about."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerage.closure.log import ClosureLog
from brokerage.closure.records import ClosureStore
from brokerage.sql import Database
from engine import logs
from engine.clock import ManualClock
from engine.config import ConfigError, load_settings


@pytest.fixture
def json_root() -> Iterator[io.StringIO]:
    """The root logger configured as a process of the system does it, writing into a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, [h.formatter for h in root.handlers])
    out = io.StringIO()
    root.handlers = [logging.StreamHandler(out)]
    logs.configure(load_settings({"CLERA_LOG_FORMAT": "json"}, env_file=None).log_format)
    yield out
    root.handlers, root.level = saved[0], saved[1]
    for handler, formatter in zip(saved[0], saved[2], strict=True):
        handler.setFormatter(formatter)


def test_a_closure_line_is_a_json_record_naming_its_account(json_root: io.StringIO, tmp_path: Path) -> None:
    records = ClosureStore(Database.for_settings(None, tmp_path / "ledger.db"))
    records.migrate()
    clock = ManualClock(dt.datetime(2012, 6, 5, 14, 0, tzinfo=dt.UTC))
    ClosureLog("acct-42", clock.now(), tmp_path / "logs", clock, records).line("✅", "WITHDRAW_ALL_FUNDS STARTED")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("clera.test").exception("failed", extra={"account_id": "acct-43", "user_id": "u-1"})
    first, second = (json.loads(line) for line in json_root.getvalue().splitlines())
    assert first["account_id"] == "acct-42" and first["level"] == "INFO"
    assert first["message"] == "closure: WITHDRAW_ALL_FUNDS STARTED" and first["logger"] == "brokerage.closure.log"
    dt.datetime.fromisoformat(first["ts"])
    assert (second["account_id"], second["user_id"], second["level"]) == ("acct-43", "u-1", "ERROR")
    assert "ValueError: boom" in second["exc"] and "thread_id" not in second


def test_text_is_the_default_and_anything_else_is_refused() -> None:
    assert load_settings({}, env_file=None).log_format == "text"
    with pytest.raises(ConfigError, match="CLERA_LOG_FORMAT"):
        load_settings({"CLERA_LOG_FORMAT": "xml"}, env_file=None)
