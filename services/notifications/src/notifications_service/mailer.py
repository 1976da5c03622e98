"""Building the MIME message of a notification and handing it to the SMTP server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

import aiosmtplib

from notifications_service.config import Settings
from notifications_service.rendering import single_line


@dataclass(frozen=True)
class OutgoingEmail:
    """What the dispatcher sends: a recorded notification's envelope and parts."""

    notification_id: uuid.UUID
    event_id: uuid.UUID
    template: str
    recipient: str
    recipient_name: str
    subject: str
    text: str
    html: str


class DeliveryError(Exception):
    """The SMTP server did not take the message; ``permanent`` when retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def message_id(*, event_id: uuid.UUID, template: str, domain: str) -> str:
    """The Message-ID of the one email of (event, template): equal for every retry of it."""
    return f"<{event_id}.{template}@{domain}>"


def build_message(email: OutgoingEmail, *, mail_from: str, domain: str) -> EmailMessage:
    """The multipart/alternative message (text first, HTML preferred) for one notification."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = formataddr((single_line(email.recipient_name), email.recipient))
    message["Subject"] = single_line(email.subject)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id(
        event_id=email.event_id, template=email.template, domain=domain
    )
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(email.text, subtype="plain", charset="utf-8")
    message.add_alternative(email.html, subtype="html", charset="utf-8")
    return message


def _is_permanent(exc: aiosmtplib.SMTPException) -> bool:
    # Only an answer about this message or recipient is final; a refused connection, a bad
    # login or a 5xx greeting is a server or configuration problem that may be fixed in time.
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(500 <= r.code < 600 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return 500 <= exc.code < 600
    return False


class SmtpMailer:
    """Sends messages to the configured SMTP server, one connection per message."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sender = parseaddr(settings.mail_from)[1]

    async def send(self, email: OutgoingEmail) -> None:
        """Send one notification; raises DeliveryError when the server did not accept it."""
        s = self._settings
        try:
            message = build_message(email, mail_from=s.mail_from, domain=s.mail_domain)
        except (ValueError, TypeError) as exc:
            # An address or header the email package refuses will never become sendable.
            raise DeliveryError(_describe(exc), permanent=True) from exc
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        try:
            await aiosmtplib.send(
                message,
                sender=self._sender,
                recipients=[email.recipient],
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=password,
                use_tls=s.smtp_use_tls,
                start_tls=s.smtp_start_tls,
                timeout=s.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPException as exc:
            raise DeliveryError(_describe(exc), permanent=_is_permanent(exc)) from exc
        except (OSError, TimeoutError) as exc:
            raise DeliveryError(_describe(exc), permanent=False) from exc


def _describe(exc: BaseException) -> str:
    return single_line(f"{type(exc).__name__}: {exc}")[:500]
