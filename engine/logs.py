"""Structured logs: with CLERA_LOG_FORMAT=json every record is one JSON object a line, carrying the
account, user and thread it is about (given as `extra={"account_id": ...}`), so a log pipeline can
follow one account across the gateway, the shards, the agents and the closure tasks.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys

import msgspec

CONTEXT = ("account_id", "user_id", "thread_id", "order_id", "step")  # the `extra` keys a record may carry
_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key in CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(out).decode()


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Idempotent: JSON on the root logger's handlers (one on stderr if it has none); text leaves
    the process's logging as it is."""
    if log_format != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    root.setLevel(min(root.level or level, level))
