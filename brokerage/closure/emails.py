"""The closure's emails: initiation, completion and failure, each as plain text and HTML.

Branded "Clera", support by email only (support@askclera.com, no phone numbers). Every value taken
from the record (name, address, codes, reasons, amounts) is HTML-escaped in the HTML part. A record
without an email address gets no email (None).
"""

from __future__ import annotations

import datetime as dt
import html
from decimal import Decimal

from brokerage.closure.records import ClosureRecord
from brokerage.email import Email

BRAND = "Clera"
SUPPORT_EMAIL = "support@askclera.com"
LOGO_URL = "https://askclera.com/clera-logo.png"
COMPLETED_TRANSFER = "COMPLETE"

TIMELINE = (
    ("Today", "Every open order is canceled and every position is sold at the market."),
    ("Next trading day (T+1)", "The sales settle; the cash becomes available to withdraw."),
    ("Following banking days", "Your cash is sent by ACH to your linked bank account, in daily transfers "
     "of at most the daily limit. Each transfer usually arrives within 1-3 business days."),
    ("Finally", "Once your balance is withdrawn, your account is closed and we email you a confirmation."),
)


def _when(at: dt.datetime | None) -> str:
    if at is None:
        return "-"
    zone = ""
    if at.tzinfo is not None:
        at, zone = at.astimezone(dt.UTC), " UTC"
    return f"{at:%B} {at.day}, {at:%Y} at {at:%H:%M}{zone}"


def _money(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.01')):,}"


def _account_ref(account_id: str) -> str:
    return f"ending in {account_id[-4:]}" if len(account_id) > 4 else account_id


def _greeting(record: ClosureRecord) -> str:
    return f"Hello {record.owner_name}," if record.owner_name else "Hello,"


def _withdrawn(record: ClosureRecord) -> Decimal:
    return sum((t.amount for t in record.transfers if t.status == COMPLETED_TRANSFER), Decimal(0))


# --- rendering ------------------------------------------------------------------------------
def _text(record: ClosureRecord, paragraphs: list[str], facts: list[tuple[str, str]], *, timeline: bool) -> str:
    lines = [_greeting(record), ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    width = max(len(label) for label, _ in facts)
    lines += [f"{label + ':':<{width + 1}} {value}" for label, value in facts]
    if timeline:
        lines += ["", "What happens next:"]
        lines += [f"  {n}. {title}: {body}" for n, (title, body) in enumerate(TIMELINE, start=1)]
    lines += [
        "",
        f"Questions? Email us at {SUPPORT_EMAIL} and quote your confirmation code {record.confirmation_code}.",
        "",
        f"The {BRAND} team",
        "",
        f"{BRAND} - this email was sent about your {BRAND} brokerage account. Keep it for your records.",
    ]
    return "\n".join(lines) + "\n"


def _html(record: ClosureRecord, title: str, paragraphs: list[str], facts: list[tuple[str, str]], *,
          timeline: bool, accent: str) -> str:
    e = html.escape
    rows = "".join(
        f'<tr><td style="padding:4px 12px 4px 0;color:#555">{e(label)}</td>'
        f'<td style="padding:4px 0;font-weight:600">{e(value)}</td></tr>'
        for label, value in facts
    )
    body = "".join(f'<p style="margin:0 0 14px">{e(p)}</p>' for p in paragraphs)
    steps = ""
    if timeline:
        items = "".join(
            f'<li style="margin:0 0 8px"><strong>{e(t)}</strong>: {e(b)}</li>' for t, b in TIMELINE
        )
        steps = (
            '<h3 style="margin:22px 0 8px;font-size:16px">What happens next</h3>'
            f'<ol style="padding-left:20px">{items}</ol>'
        )
    code = e(record.confirmation_code)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title></head>
<body style="margin:0;padding:0;background:#f4f6f8;font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1a1a1a">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center" style="padding:24px">
<table role="presentation" width="600" cellpadding="0" cellspacing="0" style="background:#ffffff;border-radius:8px;padding:32px">
<tr><td>
<img src="{LOGO_URL}" alt="{BRAND}" height="36" style="display:block;margin-bottom:24px">
<h2 style="margin:0 0 18px;font-size:22px;color:{accent}">{e(title)}</h2>
<p style="margin:0 0 14px">{e(_greeting(record))}</p>
{body}
<table role="presentation" cellpadding="0" cellspacing="0" style="margin:8px 0 4px">{rows}</table>
{steps}
<p style="margin:22px 0 0">Questions? Email us at <a href="mailto:{SUPPORT_EMAIL}">{SUPPORT_EMAIL}</a>
and quote your confirmation code <strong>{code}</strong>.</p>
<p style="margin:18px 0 0">The {BRAND} team</p>
</td></tr></table>
<p style="font-size:12px;color:#777;margin:16px 0 0">{BRAND} &middot; this email was sent about your {BRAND} brokerage account. Keep it for your records.</p>
</td></tr></table>
</body></html>
"""  # noqa: E501 - the mail's markup, one element a line


def _email(record: ClosureRecord, subject: str, title: str, paragraphs: list[str], facts: list[tuple[str, str]],
           *, timeline: bool = False, accent: str = "#1b4dd8") -> Email | None:
    if not record.email:
        return None
    return Email(
        to=record.email,
        subject=subject,
        text=_text(record, paragraphs, facts, timeline=timeline),
        html=_html(record, title, paragraphs, facts, timeline=timeline, accent=accent),
    )


# --- the three emails -------------------------------------------------------------------------
def initiation_email(record: ClosureRecord) -> Email | None:
    return _email(
        record,
        f"{BRAND}: we are closing your account (confirmation {record.confirmation_code})",
        "Your account closure has started",
        [
            f"We received your request to close your {BRAND} brokerage account "
            f"{_account_ref(record.account_id)}. The closure has started and runs on its own; "
            "you do not need to do anything.",
            "Please do not place new trades or deposits while your account is being closed.",
        ],
        [
            ("Confirmation code", record.confirmation_code),
            ("Account", record.account_id),
            ("Started", _when(record.initiated_at)),
        ],
        timeline=True,
    )


def completion_email(record: ClosureRecord) -> Email | None:
    facts = [
        ("Confirmation code", record.confirmation_code),
        ("Account", record.account_id),
        ("Started", _when(record.initiated_at)),
        ("Closed", _when(record.completed_at or record.updated_at)),
        ("Withdrawn to your bank", _money(_withdrawn(record))),
    ]
    done = [t for t in record.transfers if t.status == COMPLETED_TRANSFER]
    facts += [(f"Transfer {n}", f"{_money(t.amount)} ({_when(t.created_at)})") for n, t in enumerate(done, start=1)]
    return _email(
        record,
        f"{BRAND}: your account is closed (confirmation {record.confirmation_code})",
        "Your account is closed",
        [
            f"Your {BRAND} brokerage account {_account_ref(record.account_id)} is now closed. "
            "Every position was sold and your balance was sent to your linked bank account.",
            f"Thank you for investing with {BRAND}.",
        ],
        facts,
        accent="#1a7f37",
    )


def failure_email(record: ClosureRecord) -> Email | None:
    facts = [
        ("Confirmation code", record.confirmation_code),
        ("Account", record.account_id),
        ("Started", _when(record.initiated_at)),
        ("Stopped", _when(record.updated_at)),
        ("Reason", record.failure_reason or "an unexpected error"),
    ]
    withdrawn = _withdrawn(record)
    if withdrawn:
        facts.append(("Already withdrawn to your bank", _money(withdrawn)))
    return _email(
        record,
        f"{BRAND}: we could not finish closing your account (confirmation {record.confirmation_code})",
        "We could not finish closing your account",
        [
            f"The closure of your {BRAND} brokerage account {_account_ref(record.account_id)} stopped before "
            "it was complete. No further step runs until the closure is resumed.",
            "Any money not yet withdrawn stays in your account. Please write to us so we can finish the closure "
            "with you.",
        ],
        facts,
        accent="#c62828",
    )
