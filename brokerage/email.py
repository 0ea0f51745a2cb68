"""Sending email: over SMTP when CLERA_SMTP_HOST is set, else as `.eml` files in an outbox folder.

Every message is multipart/alternative (plain text first, then HTML). A failure of any kind raises
MailError, whose message never contains the SMTP password; nothing here logs a secret. Callers (the
closure) log a failed email and carry on: an email never blocks the work it reports on.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import logging
import os
import secrets
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import msgspec

from engine.config import Settings

log = logging.getLogger(__name__)

DEFAULT_SENDER = "Clera <support@askclera.com>"


class Email(msgspec.Struct, kw_only=True):
    to: str
    subject: str
    text: str
    html: str


class MailError(Exception):
    """An email could not be sent or written (the message says why, without any secret)."""


class Mailer(Protocol):
    def send(self, email: Email) -> None:
        """Deliver `email`; raises MailError on failure."""
        ...


def build_message(mail: Email, sender: str) -> EmailMessage:
    """The RFC 5322 message: From/To/Subject/Date/Message-ID, a text part and an HTML alternative."""
    if not mail.to or "\n" in mail.to or "\r" in mail.to or "@" not in mail.to:
        raise MailError(f"not an email address: {mail.to!r}")
    if "\n" in mail.subject or "\r" in mail.subject:
        raise MailError("an email subject cannot contain a line break")
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "askclera.com"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class SmtpMailer:
    """One SMTP connection per email (closures send a handful a day): STARTTLS when `starttls`
    (refusing to send in the clear when the server does not offer it), LOGIN when `user` is set."""

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        user: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        sender: str = DEFAULT_SENDER,
        timeout_s: float = 15.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.user = user
        self._password = password
        self.starttls = starttls
        self.sender = sender
        self.timeout_s = timeout_s
        self._tls_context = tls_context

    def __repr__(self) -> str:  # never shows the password
        return f"SmtpMailer({self.host}:{self.port}, user={self.user!r}, starttls={self.starttls})"

    def send(self, email: Email) -> None:
        message = build_message(email, self.sender)
        where = f"{self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.ehlo()
                if self.starttls:
                    if not smtp.has_extn("starttls"):
                        raise MailError(f"SMTP server {where} does not offer STARTTLS (CLERA_SMTP_STARTTLS=true)")
                    smtp.starttls(context=self._tls_context or ssl.create_default_context())
                    smtp.ehlo()
                if self.user:
                    smtp.login(self.user, self._password or "")
                refused = smtp.send_message(message)
                if refused:
                    raise MailError(f"SMTP server {where} refused recipients: {sorted(refused)}")
        except MailError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(f"SMTP login as {self.user!r} at {where} refused ({exc.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {rcpt: code for rcpt, (code, _) in exc.recipients.items()}
            raise MailError(f"SMTP server {where} refused the recipient {codes}") from None
        except smtplib.SMTPResponseException as exc:
            reply = (
                exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            )
            raise MailError(
                f"SMTP server {where} answered {exc.smtp_code} {_scrub(reply, self._password)}"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:  # refused or unreachable port, timeouts, TLS errors
            detail = _scrub(str(exc), self._password)
            raise MailError(f"cannot send email through {where}: {type(exc).__name__}: {detail}") from None
        log.info("email %r sent to %s through %s", email.subject, email.to, where)


class OutboxMailer:
    """Writes each email as an `.eml` file into `folder`; the names sort by the time they were written."""

    _lock = threading.Lock()
    _last_ns = 0

    def __init__(self, folder: Path, *, sender: str = DEFAULT_SENDER) -> None:
        self.folder = Path(folder)
        self.sender = sender

    def __repr__(self) -> str:
        return f"OutboxMailer({str(self.folder)!r})"

    @classmethod
    def _stamp(cls) -> str:
        with cls._lock:  # strictly increasing within the process, so two emails of one instant keep their order
            ns = max(time.time_ns(), cls._last_ns + 1000)
            cls._last_ns = ns
        at = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
        return at.strftime("%Y%m%dT%H%M%S.%fZ")

    def send(self, email: Email) -> None:
        message = build_message(email, self.sender)
        name = f"{self._stamp()}-{secrets.token_hex(4)}.eml"
        path = self.folder / name
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / f".{name}.part"
            partial.write_bytes(message.as_bytes())
            os.replace(partial, path)  # a reader never sees half a message
        except OSError as exc:
            raise MailError(f"cannot write email to {self.folder}: {exc}") from None
        log.info("email %r to %s written to %s", email.subject, email.to, path)

    def messages(self) -> list[Path]:
        """The `.eml` files of the outbox, oldest first."""
        return sorted(self.folder.glob("*.eml")) if self.folder.is_dir() else []


def mailer_from_settings(settings: Settings) -> Mailer:
    """SMTP when CLERA_SMTP_HOST is set, else the outbox folder CLERA_DATA_DIR/outbox."""
    if settings.smtp_host:
        return SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            user=settings.smtp_user,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            sender=settings.email_from,
        )
    return OutboxMailer(settings.data_path / "outbox", sender=settings.email_from)
