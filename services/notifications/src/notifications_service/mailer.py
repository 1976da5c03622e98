"""Building the MIME message of a notification and handing it to the SMTP server."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.charset import QP, Charset
from email.errors import MessageError
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr, parseaddr, quote

import aiosmtplib
import idna

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


# UTF-8 bodies as quoted-printable: readable, and 7-bit for servers without 8BITMIME.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def deliverable_address(address: str) -> str:
    """The address as SMTP carries it: an internationalised domain in its ASCII (IDNA) form.

    Any server takes ``ana@xn--bcher-kva.example`` for ``ana@bücher.example``. A non-ASCII
    local part stays as it is: only a server that speaks SMTPUTF8 can take it.
    """
    if "\r" in address or "\n" in address:
        raise ValueError(f"an address cannot span lines: {address!r}")
    local, at, domain = address.rpartition("@")
    if at and not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"not a valid domain: {domain!r}") from exc
        address = f"{local}@{domain}"
    return address


def build_message(email: OutgoingEmail, *, mail_from: str, domain: str) -> Message:
    """The multipart/alternative message (text first, HTML preferred) for one notification.

    Built with the email package's classic MIME classes: its modern API (``EmailMessage``,
    which parses every header into objects and picks each part's encoding) cost about 1.3 ms of
    CPU per message to build and 0.7 ms to serialise, a quarter of the service's CPU per order.
    Non-ASCII names and subjects become RFC 2047 encoded words and the parts quoted-printable
    UTF-8. A recipient whose local part is not ASCII is written as UTF-8 (RFC 6532): such a
    message goes out with SMTPUTF8 (see ``smtputf8_bytes``).
    """
    sender_name, sender = parseaddr(mail_from)
    message = MIMEMultipart("alternative")
    message["From"] = formataddr((sender_name, deliverable_address(sender)), charset="utf-8")
    message["To"] = _address_header(
        single_line(email.recipient_name), deliverable_address(email.recipient)
    )
    subject = single_line(email.subject)
    if not subject.isascii():
        subject = Header(subject, "utf-8", header_name="Subject").encode()
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id(
        event_id=email.event_id, template=email.template, domain=domain
    )
    message["Auto-Submitted"] = "auto-generated"
    message.attach(_text_part(email.text, "plain"))
    message.attach(_text_part(email.html, "html"))
    return message


def smtputf8_bytes(message: Message) -> bytes:
    """The message as sent with SMTPUTF8: headers that hold UTF-8 addresses stay UTF-8.

    (The classic classes would turn the whole ``To`` into an encoded word, address and all.)
    """
    return message.as_bytes(policy=policy.SMTPUTF8)


# What makes formataddr quote a display name (RFC 5322 specials).
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


def _address_header(name: str, address: str) -> str:
    if address.isascii():
        return formataddr((name, address), charset="utf-8")
    # RFC 6532: the address as UTF-8, which formataddr refuses; the name as formataddr writes it.
    if not name:
        return f"<{address}>"
    if not name.isascii():
        return f"{Header(name, 'utf-8').encode()} <{address}>"
    if _SPECIALS.search(name):
        return f'"{quote(name)}" <{address}>'
    return f"{name} <{address}>"


def _text_part(body: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(body, _UTF8_QP)
    return part


def _is_permanent(exc: aiosmtplib.SMTPException) -> bool:
    # Only an answer about this message or recipient is final; a refused connection, a bad
    # login or a 5xx greeting is a server or configuration problem that may be fixed in time.
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(500 <= r.code < 600 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return 500 <= exc.code < 600
    return False


class SmtpMailer:
    """Sends messages to the configured SMTP server, reusing a few open connections.

    A connection goes back to the idle list after a message it carried was accepted, and is
    taken again for the next one while it is still open, has been idle for less than
    ``smtp_reuse_idle_seconds`` and has carried fewer than ``smtp_messages_per_connection``.
    Any failure closes the connection it happened on. A reused connection that the server
    closed while it sat idle is noticed before use (its end was read) and replaced; one that
    died silently fails like any other send, transiently, and the dispatcher retries it. At
    most ``dispatch_concurrency`` connections stay idle: the dispatcher sends no more at once.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sender = deliverable_address(parseaddr(settings.mail_from)[1])
        self._idle: list[_Connection] = []

    async def send(self, email: OutgoingEmail) -> None:
        """Send one notification; raises DeliveryError when the server did not accept it."""
        s = self._settings
        try:
            recipient = deliverable_address(email.recipient)
            message = build_message(email, mail_from=s.mail_from, domain=s.mail_domain)
            utf8 = None if recipient.isascii() else smtputf8_bytes(message)
        except (ValueError, TypeError, MessageError) as exc:
            # An address or header the email package refuses will never become sendable.
            raise DeliveryError(_describe(exc), permanent=True) from exc
        connection: _Connection | None = None
        try:
            connection = self._take_idle() or await self._connect()
            if utf8 is None:
                await connection.client.send_message(
                    message, sender=self._sender, recipients=[recipient]
                )
            else:
                await connection.client.sendmail(
                    self._sender, [recipient], utf8, mail_options=["SMTPUTF8"]
                )
        except aiosmtplib.SMTPNotSupported as exc:
            if utf8 is None or connection is None:
                # Connecting (STARTTLS not offered, say): a configuration the server may change.
                _close(connection)
                raise DeliveryError(_describe(exc), permanent=False) from exc
            # The server does not offer SMTPUTF8, so it can never take this address. Nothing
            # was sent yet: the connection is as good as before.
            await self._keep_or_quit(connection)
            raise DeliveryError(_describe(exc), permanent=True) from exc
        except aiosmtplib.SMTPException as exc:
            _close(connection)
            raise DeliveryError(_describe(exc), permanent=_is_permanent(exc)) from exc
        except (OSError, TimeoutError) as exc:
            _close(connection)
            raise DeliveryError(_describe(exc), permanent=False) from exc
        except BaseException:
            _close(connection)  # cancelled mid-conversation: the connection is in no known state
            raise
        connection.sent += 1
        await self._keep_or_quit(connection)

    async def _keep_or_quit(self, connection: _Connection) -> None:
        if self._reusable(connection):
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            await _quit(connection)

    async def close(self, _runtime: object = None) -> None:
        """Say goodbye on every idle connection (an on_stop hook, after the dispatcher's)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await _quit(connection)

    async def _connect(self) -> _Connection:
        s = self._settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=password,
            use_tls=s.smtp_use_tls,
            start_tls=s.smtp_start_tls,
            timeout=s.smtp_timeout_seconds,
        )
        await client.connect()
        return _Connection(client)

    def _take_idle(self) -> _Connection | None:
        limit = self._settings.smtp_reuse_idle_seconds
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the most recently used first
            if connection.client.is_connected and now - connection.idle_since < limit:
                return connection
            _close(connection)
        return None

    def _reusable(self, connection: _Connection) -> bool:
        s = self._settings
        return (
            s.smtp_reuse_idle_seconds > 0
            and connection.sent < s.smtp_messages_per_connection
            and len(self._idle) < s.dispatch_concurrency
        )


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = 0.0


def _close(connection: _Connection | None) -> None:
    if connection is not None:
        connection.client.close()


async def _quit(connection: _Connection) -> None:
    # A polite goodbye for a connection in good standing; a closed socket if it fails.
    try:
        await connection.client.quit(timeout=1.0)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        _close(connection)


def _describe(exc: BaseException) -> str:
    return single_line(f"{type(exc).__name__}: {exc}")[:500]
