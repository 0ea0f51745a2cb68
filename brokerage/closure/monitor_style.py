"""How `clera closure monitor` colours what it prints: a log line by its icon and keywords (blue
information, green success, yellow warnings and retries, red errors and failures, cyan email, magenta
timing), a step by how far it got, and the times and progress bar of a summary."""

from __future__ import annotations

import datetime as dt
import re

from rich.text import Text

from brokerage.closure.records import STEP_NUMBER, TOTAL_STEPS, ClosureRecord

_PREFIX = re.compile(r"^(\[[^\]]*\]\s?)")
_RED_ICONS = ("❌", "🚨", "💥", "🛑")
_YELLOW_ICONS = ("⚠", "🔁", "⏳")
_CYAN_ICONS = ("📧", "✉")
_MAGENTA_ICONS = ("⏱", "⌛")
_GREEN_ICONS = ("✅", "🎉")
_RED_WORDS = re.compile(r"\b(FAILED|FAILURE|ERROR|EXCEPTION|CRITICAL)\b|Current Step: failed")
_YELLOW_WORDS = re.compile(r"\b(WARNING|WARN|RETRY|RETRYING|RETRIED|REJECTED|RETURNED)\b|\bretry", re.IGNORECASE)
_GREEN_WORDS = re.compile(r"\b(PASSED|COMPLETED|SUCCESS|SUCCEEDED)\b|Current Step: completed")


def line_style(line: str) -> str:
    """The colour of one log line: by its leading icon, else by the icons and keywords it contains."""
    body = _PREFIX.sub("", line, count=1).lstrip()
    if _RED_WORDS.search(body) or any(i in body for i in _RED_ICONS):
        return "red"  # a failed email or safety check is a failure before it is an email or a check
    if body.startswith(_YELLOW_ICONS):
        return "yellow"
    if body.startswith(_CYAN_ICONS):
        return "cyan"
    if body.startswith(_MAGENTA_ICONS):
        return "magenta"
    if body.startswith(_GREEN_ICONS):
        return "green"
    if _YELLOW_WORDS.search(body):
        return "yellow"
    if _GREEN_WORDS.search(body) or any(i in body for i in _GREEN_ICONS):
        return "green"
    return "blue"


def styled(line: str) -> Text:
    text = Text()
    prefix = _PREFIX.match(line)
    if prefix:
        text.append(prefix.group(1), style="dim")
        line = line[prefix.end():]
    text.append(line, style=line_style(line))
    return text


def when_text(at: dt.datetime | None) -> str:
    if at is None:
        return "-"
    if at.tzinfo is not None:
        return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return at.strftime("%Y-%m-%d %H:%M:%S")


def progress_bar(number: int) -> str:
    done = max(0, min(number, TOTAL_STEPS))
    return "█" * (done * 4) + "░" * ((TOTAL_STEPS - done) * 4)


def progress_text(record: ClosureRecord) -> str:
    number = STEP_NUMBER.get(record.step, 0)
    return "failed" if number < 0 else f"step {number}/{TOTAL_STEPS}"


def step_style(step: str) -> str:
    return {"completed": "green", "failed": "red"}.get(
        step, "yellow" if step == "partial_withdrawal_waiting" else "blue"
    )
