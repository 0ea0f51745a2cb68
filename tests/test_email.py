"""Email: SMTP against a real local SMTP server (aiosmtpd), the outbox's .eml files, the closure templates."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import ssl
from collections.abc import Iterator
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import free_port

from brokerage.closure.emails import completion_email, failure_email, initiation_email
from brokerage.closure.records import ClosureRecord, ClosureTransfer, HistoryEntry
from brokerage.email import (
    Email,
    MailError,
    OutboxMailer,
    SmtpMailer,
    mailer_from_settings,
)
from engine.config import load_settings

PASSWORD = "s3cret-Pa55word-never-shown"
SAMPLE = Email(to="ada@example.com", subject="Hello from Clera", text="plain body\n", html="<p>html body</p>")


class Collector:
    """An aiosmtpd handler that keeps what it receives; `refuse` answers RCPT or DATA with an error."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.refuse == "rcpt":
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse == "data":
            return "554 5.7.1 message rejected as spam"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword) and auth_data.login == b"clera" and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def _serve(handler: Collector, **params: Any) -> Iterator[tuple[Controller, int]]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **params)
    controller.start()
    try:
        yield controller, port
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[tuple[Collector, int]]:
    handler = Collector()
    for _, port in _serve(handler):
        yield handler, port


def _parts(message: EmailMessage) -> dict[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}


# --- SMTP ------------------------------------------------------------------------------------
def test_smtp_delivers_text_and_html(smtp_server: tuple[Collector, int]) -> None:
    handler, port = smtp_server
    SmtpMailer("127.0.0.1", port, starttls=False, sender="Clera <support@askclera.com>").send(SAMPLE)
    assert len(handler.received) == 1
    mail_from, rcpt_tos, message = handler.received[0]
    assert mail_from == "support@askclera.com" and rcpt_tos == ["ada@example.com"]
    assert message["Subject"] == "Hello from Clera" and message["To"] == "ada@example.com"
    assert message["Message-ID"] and message["Date"]
    parts = _parts(message)
    assert parts["text/plain"].strip() == "plain body" and "<p>html body</p>" in parts["text/html"]


def test_smtp_logs_in_when_a_user_is_set() -> None:
    handler = Collector()
    for _, port in _serve(handler, authenticator=_authenticator, auth_require_tls=False):
        SmtpMailer("127.0.0.1", port, user="clera", password=PASSWORD, starttls=False).send(SAMPLE)
        assert len(handler.received) == 1
        with pytest.raises(MailError) as refused:
            SmtpMailer("127.0.0.1", port, user="clera", password="wrong-" + PASSWORD, starttls=False).send(SAMPLE)
        assert "login" in str(refused.value) and PASSWORD not in str(refused.value)
        assert PASSWORD not in repr(SmtpMailer("127.0.0.1", port, user="clera", password=PASSWORD))
    assert len(handler.received) == 1


def test_smtp_starttls_then_login(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_contexts(tmp_path)
    handler = Collector()
    for _, port in _serve(handler, tls_context=server_ctx, require_starttls=True, authenticator=_authenticator):
        SmtpMailer("127.0.0.1", port, user="clera", password=PASSWORD, tls_context=client_ctx).send(SAMPLE)
        # a client that does not trust the server's certificate refuses to go on
        with pytest.raises(MailError) as untrusted:
            SmtpMailer("127.0.0.1", port, user="clera", password=PASSWORD).send(SAMPLE)
        assert PASSWORD not in str(untrusted.value)
    assert [rcpt for _, rcpt, _ in handler.received] == [["ada@example.com"]]


def test_starttls_required_but_not_offered_is_refused(smtp_server: tuple[Collector, int]) -> None:
    handler, port = smtp_server
    with pytest.raises(MailError, match="STARTTLS"):
        SmtpMailer("127.0.0.1", port, user="clera", password=PASSWORD, starttls=True).send(SAMPLE)
    assert handler.received == []  # nothing went out in the clear


@pytest.mark.parametrize("refuse", ["rcpt", "data"])
def test_a_refusing_server_raises_mail_error(refuse: str) -> None:
    handler = Collector(refuse=refuse)
    for _, port in _serve(handler):
        with pytest.raises(MailError) as refused:
            SmtpMailer("127.0.0.1", port, starttls=False).send(SAMPLE)
    assert ("550" if refuse == "rcpt" else "554") in str(refused.value)
    assert handler.received == []


def test_a_closed_port_raises_mail_error() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(MailError, match=f"127.0.0.1:{port}") as closed:
        SmtpMailer("127.0.0.1", port, user="clera", password=PASSWORD, starttls=False, timeout_s=3).send(SAMPLE)
    assert PASSWORD not in str(closed.value)


def test_bad_addresses_are_refused_before_sending(smtp_server: tuple[Collector, int]) -> None:
    handler, port = smtp_server
    mailer = SmtpMailer("127.0.0.1", port, starttls=False)
    for bad in ("", "not-an-address", "a@b.c\r\nBcc: victim@example.com"):
        with pytest.raises(MailError):
            mailer.send(Email(to=bad, subject="s", text="t", html="h"))
    with pytest.raises(MailError):
        mailer.send(Email(to="a@b.c", subject="s\r\nBcc: victim@example.com", text="t", html="h"))
    assert handler.received == []


# --- outbox ----------------------------------------------------------------------------------
def test_outbox_files_parse_back_and_sort_by_time(tmp_path: Path) -> None:
    outbox = OutboxMailer(tmp_path / "outbox")
    subjects = [f"message {n}" for n in range(5)]
    for subject in subjects:
        outbox.send(Email(to="ada@example.com", subject=subject, text=f"text of {subject}", html=f"<b>{subject}</b>"))
    files = sorted((tmp_path / "outbox").iterdir())
    assert [f.suffix for f in files] == [".eml"] * 5 and files == outbox.messages()
    parsed = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    assert [m["Subject"] for m in parsed] == subjects  # name order is send order
    for subject, message in zip(subjects, parsed, strict=True):
        assert message["To"] == "ada@example.com" and message["From"] == "Clera <support@askclera.com>"
        parts = _parts(message)
        assert parts["text/plain"].strip() == f"text of {subject}" and f"<b>{subject}</b>" in parts["text/html"]


def test_outbox_that_cannot_be_written_raises_mail_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(MailError):
        OutboxMailer(blocker / "outbox").send(SAMPLE)


def test_mailer_from_settings(tmp_path: Path) -> None:
    outbox = mailer_from_settings(load_settings({"CLERA_DATA_DIR": str(tmp_path)}, env_file=None))
    assert isinstance(outbox, OutboxMailer) and outbox.folder == tmp_path.resolve() / "outbox"
    smtp = mailer_from_settings(load_settings({
        "CLERA_DATA_DIR": str(tmp_path), "CLERA_SMTP_HOST": "mail.example.com", "CLERA_SMTP_PORT": "2525",
        "CLERA_SMTP_USER": "clera", "CLERA_SMTP_PASSWORD": PASSWORD, "CLERA_SMTP_STARTTLS": "false",
        "CLERA_EMAIL_FROM": "Ops <ops@askclera.com>",
    }, env_file=None))
    assert isinstance(smtp, SmtpMailer)
    assert (smtp.host, smtp.port, smtp.user, smtp.starttls, smtp.sender) == (
        "mail.example.com", 2525, "clera", False, "Ops <ops@askclera.com>")
    assert PASSWORD not in repr(smtp)


# --- the closure's templates ------------------------------------------------------------------
NASTY = '<script>alert("x")</script> & Co'


def _record(**changes: Any) -> ClosureRecord:
    at = dt.datetime(2025, 7, 9, 14, 30, tzinfo=dt.UTC)
    fields: dict[str, Any] = {
        "account_id": "acct-0000-9f3c", "user_id": "user-1", "ach_relationship_id": "rel-1",
        "confirmation_code": "CLA-7Q2K9X", "initiated_at": at, "updated_at": at + dt.timedelta(days=4),
        "email": "ada@example.com", "owner_name": f"Ada {NASTY}",
        "history": [HistoryEntry(step="initiated", at=at, message="started")],
    }
    fields.update(changes)
    return ClosureRecord(**fields)


def _check_common(mail: Email | None, record: ClosureRecord) -> Email:
    assert mail is not None and mail.to == record.email
    assert record.confirmation_code in mail.subject and "Clera" in mail.subject
    for body in (mail.text, mail.html):
        assert record.confirmation_code in body and "support@askclera.com" in body and "Clera" in body
        assert "phone" not in body.lower() and "call us" not in body.lower()
    assert NASTY not in mail.html and html.escape(NASTY) in mail.html  # data is escaped in HTML
    assert "<script>" not in mail.html
    assert NASTY in mail.text  # the plain text keeps it as written
    assert mail.html.lstrip().startswith("<!DOCTYPE html>") and "https://askclera.com/clera-logo.png" in mail.html
    return mail


def test_initiation_email_has_code_and_timeline() -> None:
    record = _record()
    mail = _check_common(initiation_email(record), record)
    for body in (mail.text, mail.html):
        assert "T+1" in body and "daily" in body and "closed" in body and "ACH" in body
        assert "July 9, 2025" in body


def test_completion_email_reports_the_withdrawn_total() -> None:
    at = dt.datetime(2025, 7, 11, tzinfo=dt.UTC)
    record = _record(step="completed", completed_at=dt.datetime(2025, 7, 15, 9, tzinfo=dt.UTC), transfers=[
        ClosureTransfer(id="t1", amount=Decimal("50000"), status="COMPLETE", created_at=at),
        ClosureTransfer(id="t2", amount=Decimal("50000"), status="COMPLETE", created_at=at + dt.timedelta(days=1)),
        ClosureTransfer(id="t3", amount=Decimal("20000.5"), status="COMPLETE", created_at=at + dt.timedelta(days=2)),
        ClosureTransfer(id="t0", amount=Decimal("999"), status="RETURNED", created_at=at),
    ])
    mail = _check_common(completion_email(record), record)
    for body in (mail.text, mail.html):
        assert "$120,000.50" in body and "July 15, 2025" in body and "$999" not in body


def test_failure_email_says_why() -> None:
    reason = 'transfer rejected 3 times: "R01 insufficient funds" <bank>'
    record = _record(step="failed", failure_reason=reason)
    mail = _check_common(failure_email(record), record)
    assert reason in mail.text and html.escape(reason) in mail.html and reason not in mail.html


def test_no_email_address_no_email() -> None:
    record = _record(email=None)
    assert initiation_email(record) is None and completion_email(record) is None and failure_email(record) is None


def test_templates_go_through_smtp(smtp_server: tuple[Collector, int]) -> None:
    handler, port = smtp_server
    record = _record()
    mail = initiation_email(record)
    assert mail is not None
    SmtpMailer("127.0.0.1", port, starttls=False).send(mail)
    (_, _, message), = handler.received
    parts = _parts(message)
    assert "CLA-7Q2K9X" in parts["text/plain"] and html.escape(NASTY) in parts["text/html"]
    assert message["Subject"] == mail.subject


# --- a self-signed certificate for the STARTTLS test ------------------------------------------
def _tls_contexts(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    x509 = pytest.importorskip("cryptography.x509")
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
