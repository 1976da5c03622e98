"""The mailer's SMTP connections, against a real SMTP server: reused, replaced, bounded."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from notifications_service.config import Settings
from notifications_service.mailer import DeliveryError, OutgoingEmail, SmtpMailer
from svctools.smtp_sink import SmtpSink, read_messages  # type: ignore[import-untyped]


def mailer_for(sink: SmtpSink, **changes: Any) -> SmtpMailer:
    settings = Settings(
        environment="test",
        smtp_port=sink.port,
        smtp_timeout_seconds=2.0,
        send_lease_seconds=10.0,
        **changes,
    )
    return SmtpMailer(settings)


def email(number: int) -> OutgoingEmail:
    return OutgoingEmail(
        notification_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        template="welcome",
        recipient=f"user{number}@example.com",
        recipient_name=f"User {number}",
        subject=f"Message {number}",
        text=f"Hello {number}\n",
        html=f"<p>Hello {number}</p>\n",
    )


def received_subjects(sink: SmtpSink) -> list[str]:
    return sorted(message.subject for message in read_messages(sink.maildir))


class TestReuse:
    async def test_messages_in_a_row_share_one_connection(self, sink: SmtpSink) -> None:
        mailer = mailer_for(sink)
        for number in range(5):
            await mailer.send(email(number))
        await mailer.close()

        assert sink.connections == 1
        assert received_subjects(sink) == [f"Message {n}" for n in range(5)]

    async def test_concurrent_senders_keep_at_most_one_connection_each(
        self, sink: SmtpSink
    ) -> None:
        mailer = mailer_for(sink, dispatch_concurrency=3)

        async def sender(first: int) -> None:
            for number in range(first, first + 4):
                await mailer.send(email(number))

        await asyncio.gather(sender(0), sender(10), sender(20))
        await mailer.close()

        assert sink.connections <= 3
        assert len(received_subjects(sink)) == 12

    async def test_a_connection_carries_at_most_the_configured_number_of_messages(
        self, sink: SmtpSink
    ) -> None:
        mailer = mailer_for(sink, smtp_messages_per_connection=2)
        for number in range(5):
            await mailer.send(email(number))

        assert sink.connections == 3
        assert len(received_subjects(sink)) == 5

    async def test_reuse_switched_off_opens_one_connection_per_message(
        self, sink: SmtpSink
    ) -> None:
        mailer = mailer_for(sink, smtp_reuse_idle_seconds=0)
        for number in range(3):
            await mailer.send(email(number))

        assert sink.connections == 3


class TestReplacement:
    async def test_a_connection_the_server_closed_is_replaced_without_a_failure(
        self, sink: SmtpSink
    ) -> None:
        mailer = mailer_for(sink)
        await mailer.send(email(1))
        await sink.drop_connections()
        await asyncio.sleep(0.05)  # the client reads the server's goodbye

        await mailer.send(email(2))

        assert sink.connections == 2
        assert received_subjects(sink) == ["Message 1", "Message 2"]

    async def test_a_connection_idle_for_too_long_is_not_reused(self, sink: SmtpSink) -> None:
        mailer = mailer_for(sink, smtp_reuse_idle_seconds=0.2)
        await mailer.send(email(1))
        await asyncio.sleep(0.3)

        await mailer.send(email(2))

        assert sink.connections == 2

    async def test_a_refusal_closes_its_connection_and_the_next_message_goes_through(
        self, sink: SmtpSink
    ) -> None:
        mailer = mailer_for(sink)
        await mailer.send(email(1))
        sink.reject = True
        with pytest.raises(DeliveryError) as refused:
            await mailer.send(email(2))
        sink.reject = False

        await mailer.send(email(3))

        assert refused.value.permanent is False  # the sink answers 451
        assert sink.connections == 2
        assert received_subjects(sink) == ["Message 1", "Message 3"]

    async def test_closing_says_goodbye_on_idle_connections(self, sink: SmtpSink) -> None:
        mailer = mailer_for(sink)
        await mailer.send(email(1))

        await mailer.close()
        await asyncio.sleep(0.05)

        assert sink.open_connections == 0  # the server saw every connection end
