"""The MIME message and how SMTP failures are classified (the SMTP call itself is faked)."""

from __future__ import annotations

import email
import email.policy
import uuid
from typing import Any, ClassVar

import aiosmtplib
import pytest

from notifications_service.config import Settings
from notifications_service.mailer import (
    DeliveryError,
    OutgoingEmail,
    SmtpMailer,
    build_message,
    smtputf8_bytes,
)

EVENT = uuid.UUID("9b2e0d61-2222-4222-8222-222222222222")


def outgoing(**changes: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "notification_id": uuid.uuid4(),
        "event_id": EVENT,
        "template": "welcome",
        "recipient": "ada@example.com",
        "recipient_name": "Ada Lovelace",
        "subject": "Welcome, Ada Lovelace",
        "text": "Hello Ada Lovelace,\n",
        "html": "<p>Hello Ada Lovelace,</p>\n",
    }
    fields.update(changes)
    return OutgoingEmail(**fields)


class TestBuildMessage:
    def test_has_both_parts_and_a_message_id_derived_from_event_and_template(self) -> None:
        message = build_message(
            outgoing(), mail_from="Shop <no-reply@shop.local>", domain="shop.local"
        )
        parsed = email.message_from_bytes(bytes(message), policy=email.policy.default)

        assert parsed["From"] == "Shop <no-reply@shop.local>"
        assert parsed["To"] == "Ada Lovelace <ada@example.com>"
        assert parsed["Subject"] == "Welcome, Ada Lovelace"
        assert parsed["Message-ID"] == f"<{EVENT}.welcome@shop.local>"
        assert parsed.get_content_type() == "multipart/alternative"
        text = parsed.get_body(preferencelist=("plain",))
        html = parsed.get_body(preferencelist=("html",))
        assert text is not None
        assert html is not None
        assert text.get_content() == "Hello Ada Lovelace,\n"
        assert html.get_content() == "<p>Hello Ada Lovelace,</p>\n"

    def test_a_retry_builds_the_same_message_id(self) -> None:
        first = build_message(outgoing(), mail_from="a@b.example", domain="b.example")
        again = build_message(outgoing(), mail_from="a@b.example", domain="b.example")
        assert first["Message-ID"] == again["Message-ID"]

    def test_a_name_cannot_inject_headers(self) -> None:
        message = build_message(
            outgoing(recipient_name="Eve\r\nBcc: victim@example.com", subject="Hi\nBcc: x@y.z"),
            mail_from="a@b.example",
            domain="b.example",
        )
        raw = bytes(message).decode()
        assert "\nBcc:" not in raw
        parsed = email.message_from_bytes(bytes(message), policy=email.policy.default)
        assert parsed["To"].addresses[0].addr_spec == "ada@example.com"

    def test_non_ascii_names_subjects_and_bodies_read_back_exactly(self) -> None:
        subject = "Zoë, your order №1234 is confirmed, and this subject is long enough to fold"
        message = build_message(
            outgoing(
                recipient_name='Zoë Ölçer, "the" boss',
                subject=subject,
                text="Grüße, Zoë\n",
                html="<p>Grüße, Zoë</p>\n",
            ),
            mail_from="Schöne Läden <no-reply@shop.local>",
            domain="shop.local",
        )
        raw = bytes(message)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)

        assert raw.isascii()  # encoded words and quoted-printable: any server takes it
        assert parsed["Subject"] == subject
        assert parsed["To"].addresses[0].display_name == 'Zoë Ölçer, "the" boss'
        assert parsed["To"].addresses[0].addr_spec == "ada@example.com"
        assert parsed["From"].addresses[0].display_name == "Schöne Läden"
        text = parsed.get_body(preferencelist=("plain",))
        html = parsed.get_body(preferencelist=("html",))
        assert text is not None
        assert text.get_content() == "Grüße, Zoë\n"
        assert html is not None
        assert html.get_content() == "<p>Grüße, Zoë</p>\n"

    def test_an_internationalised_address_is_written_for_smtputf8(self) -> None:
        message = build_message(
            outgoing(recipient="zoë@exämple.com"), mail_from="a@b.example", domain="b.example"
        )

        raw = smtputf8_bytes(message)

        # The local part as UTF-8 (RFC 6532); the domain in its IDNA form, which any server takes.
        assert "<zoë@xn--exmple-cua.com>".encode() in raw
        assert raw.isascii() is False

    def test_a_domain_that_is_no_valid_idn_is_refused(self) -> None:
        # The mailer turns the ValueError into a permanent failure.
        with pytest.raises(ValueError):
            build_message(
                outgoing(recipient="ana@exämple..com"), mail_from="a@b.example", domain="b.example"
            )

    def test_an_address_spanning_lines_is_refused(self) -> None:
        with pytest.raises(ValueError):
            build_message(
                outgoing(recipient="ada@example.com\r\nBcc: victim@example.com"),
                mail_from="a@b.example",
                domain="b.example",
            )


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test", smtp_timeout_seconds=1.0, send_lease_seconds=5.0)


class FakeSMTP:
    """Stands in for aiosmtplib.SMTP: records what it was given, fails with ``failure``."""

    created: ClassVar[list[FakeSMTP]] = []
    failure: ClassVar[Exception | None] = None

    def __init__(self, **kwargs: Any) -> None:
        self.options = kwargs
        self.sent: list[dict[str, Any]] = []
        self.is_connected = False
        FakeSMTP.created.append(self)

    async def connect(self) -> None:
        self.is_connected = True

    async def send_message(self, message: Any, **kwargs: Any) -> tuple[dict[str, Any], str]:
        if FakeSMTP.failure is not None:
            raise FakeSMTP.failure
        self.sent.append(kwargs)
        return {}, "OK"

    def close(self) -> None:
        self.is_connected = False


def failing_with(monkeypatch: pytest.MonkeyPatch, exc: Exception | None) -> None:
    monkeypatch.setattr(aiosmtplib, "SMTP", FakeSMTP)
    monkeypatch.setattr(FakeSMTP, "created", [])
    monkeypatch.setattr(FakeSMTP, "failure", exc)


class TestSmtpMailerFailures:
    @pytest.mark.parametrize(
        "exc",
        [
            aiosmtplib.SMTPConnectError("connection refused"),
            aiosmtplib.SMTPServerDisconnected("gone"),
            aiosmtplib.SMTPReadTimeoutError("slow"),
            aiosmtplib.SMTPDataError(451, "4.3.0 temporarily unavailable"),
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(450, "mailbox busy", "ada@example.com")]
            ),
            aiosmtplib.SMTPAuthenticationError(535, "bad credentials"),
            aiosmtplib.SMTPSenderRefused(553, "sender not allowed", "no-reply@shop.local"),
            # Not offering an extension the configuration asks for (STARTTLS) is fixable there;
            # only SMTPUTF8 missing for a UTF-8 address is final (see test_addresses).
            aiosmtplib.SMTPNotSupported("STARTTLS extension not supported by server"),
            ConnectionResetError("reset"),
        ],
    )
    async def test_server_and_transient_failures_are_retried(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch, exc: Exception
    ) -> None:
        failing_with(monkeypatch, exc)
        with pytest.raises(DeliveryError) as raised:
            await SmtpMailer(settings).send(outgoing())
        assert raised.value.permanent is False

    @pytest.mark.parametrize(
        "exc",
        [
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(550, "no such user", "ada@example.com")]
            ),
            aiosmtplib.SMTPDataError(554, "message rejected"),
        ],
    )
    async def test_a_5xx_for_the_recipient_or_message_is_final(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch, exc: Exception
    ) -> None:
        failing_with(monkeypatch, exc)
        with pytest.raises(DeliveryError) as raised:
            await SmtpMailer(settings).send(outgoing())
        assert raised.value.permanent is True

    async def test_sends_to_the_configured_server_with_the_bare_sender_address(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        failing_with(monkeypatch, None)
        await SmtpMailer(settings).send(outgoing())

        [client] = FakeSMTP.created
        [call] = client.sent
        assert call["sender"] == "no-reply@shop.local"
        assert call["recipients"] == ["ada@example.com"]
        assert (client.options["hostname"], client.options["port"]) == ("127.0.0.1", 1025)
        assert client.options["timeout"] == 1.0
        assert client.options["password"] is None
