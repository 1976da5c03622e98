"""International addresses, against a real SMTP server with and without SMTPUTF8."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from notifications_service.mailer import DeliveryError, OutgoingEmail
from svctools.smtp_sink import (  # type: ignore[import-untyped]
    ReceivedMessage,
    SmtpSink,
    read_messages,
)

from .support import Shop, new_email
from .test_smtp_connections import mailer_for

IDN_DOMAIN = "bücher.example"
IDN_DOMAIN_ASCII = "xn--bcher-kva.example"


def email_to(recipient: str, name: str = "Zoë Ölçer") -> OutgoingEmail:
    return OutgoingEmail(
        notification_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        template="welcome",
        recipient=recipient,
        recipient_name=name,
        subject="Bienvenue, Zoë",
        text="Bonjour Zoë\n",
        html="<p>Bonjour Zoë</p>\n",
    )


async def sent_alone(sink: SmtpSink, message: OutgoingEmail) -> ReceivedMessage:
    """Send one email through a fresh mailer; what the sink received (it must be alone)."""
    mailer = mailer_for(sink)
    await mailer.send(message)
    await mailer.close()
    [received] = read_messages(sink.maildir)
    return received


@pytest.fixture
async def ascii_only_sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    """An SMTP server that does not offer SMTPUTF8."""
    async with SmtpSink(port=0, maildir=tmp_path / "ascii-mail", smtputf8=False) as running:
        yield running


class TestInternationalAddresses:
    async def test_a_non_ascii_local_part_is_sent_with_smtputf8(self, sink: SmtpSink) -> None:
        received = await sent_alone(sink, email_to(f"zoë@{IDN_DOMAIN}", name="Smith, Zoë"))

        assert received.rcpt_tos == [f"zoë@{IDN_DOMAIN_ASCII}"]
        assert received.to == [f"zoë@{IDN_DOMAIN_ASCII}"]
        assert received.subject == "Bienvenue, Zoë"
        assert received.text == "Bonjour Zoë\n"

    async def test_an_international_domain_goes_out_in_its_ascii_form_anywhere(
        self, ascii_only_sink: SmtpSink
    ) -> None:
        received = await sent_alone(ascii_only_sink, email_to(f"ana@{IDN_DOMAIN}", name="Ana"))

        assert received.rcpt_tos == [f"ana@{IDN_DOMAIN_ASCII}"]
        assert received.to == [f"ana@{IDN_DOMAIN_ASCII}"]

    async def test_a_server_without_smtputf8_refuses_it_for_good_and_the_next_mail_goes_out(
        self, ascii_only_sink: SmtpSink
    ) -> None:
        mailer = mailer_for(ascii_only_sink)
        with pytest.raises(DeliveryError) as refused:
            await mailer.send(email_to("zoë@example.com"))
        await mailer.send(email_to("plain@example.com", name="Plain"))
        await mailer.close()

        assert refused.value.permanent
        assert "SMTPUTF8" in refused.value.reason
        assert [m.rcpt_tos for m in read_messages(ascii_only_sink.maildir)] == [
            ["plain@example.com"]
        ]
        assert ascii_only_sink.connections == 1

    async def test_a_user_with_a_non_ascii_address_gets_the_welcome_mail(self, shop: Shop) -> None:
        local, _, domain = new_email().partition("@")
        address = f"zoë.{local}@{domain}"
        await shop.register(name="Zoë", email=address)

        welcome = await shop.wait_for_mail(address, "Welcome")

        assert welcome.to == [address]
