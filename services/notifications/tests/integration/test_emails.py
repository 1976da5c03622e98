"""Events in, real emails out: welcome, order emails, escaping, duplicates."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import update

from notifications_service.models import inbox
from notifications_service.service import short_id
from servicekit.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderFailed,
    PaymentRefunded,
    new_envelope,
)
from servicekit.logging import captured_lines
from servicekit.retention import RetentionPolicy, purge

from .support import Shop


class TestWelcomeEmail:
    async def test_registration_sends_one_welcome_email_listed_as_sent(self, shop: Shop) -> None:
        user_id, email = await shop.register(name="Ada Lovelace")

        mail = await shop.wait_for_mail(email)
        notification = await shop.wait_for_notification(user_id, template="welcome", status="sent")
        await asyncio.sleep(0.5)  # a second email would have arrived by now

        assert len(await shop.mails(email)) == 1
        assert mail.subject == "Welcome, Ada Lovelace"
        assert mail.to == [email]
        assert mail.rcpt_tos == [email]
        assert mail.mail_from == "no-reply@shop.local"
        assert mail.text is not None
        assert "Hello Ada Lovelace," in mail.text
        assert mail.html is not None
        assert "<h1" in mail.html
        assert "Ada Lovelace" in mail.html
        assert mail.message_id == f"<{notification['event_id']}.welcome@shop.local>"
        assert notification["channel"] == "email"
        assert notification["recipient"] == email
        assert notification["subject"] == "Welcome, Ada Lovelace"
        assert notification["event_type"] == "user.registered"
        assert notification["attempts"] == 1
        assert notification["sent_at"] is not None
        assert notification["sent_at"].endswith("Z")

    async def test_a_script_in_the_name_is_escaped_in_html_and_verbatim_in_text(
        self, shop: Shop
    ) -> None:
        user_id, email = await shop.register(name="<script>alert(1)</script>")
        welcome = await shop.wait_for_mail(email, "Welcome")
        await shop.confirm_order(user_id)
        order = await shop.wait_for_mail(email, "confirmed")

        for mail in (welcome, order):
            assert mail.html is not None
            assert mail.text is not None
            assert "<script>" not in mail.html
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
            assert "Hello <script>alert(1)</script>," in mail.text
            assert "&lt;" not in mail.text
        assert welcome.subject == "Welcome, <script>alert(1)</script>"


class TestOrderEmails:
    async def test_a_confirmed_order_sends_one_email_with_total_and_currency(
        self, shop: Shop
    ) -> None:
        user_id, email = await shop.register()
        await shop.wait_for_mail(email, "Welcome")

        envelope = await shop.confirm_order(user_id, total="1234.50", currency="USD")

        order_id = uuid.UUID(envelope.data["order_id"])
        mail = await shop.wait_for_mail(email, "confirmed")
        assert mail.subject == f"Your order {short_id(order_id)} is confirmed (1234.50 USD)"
        assert mail.text is not None
        assert "Total: 1234.50 USD" in mail.text
        assert mail.html is not None
        assert "1234.50 USD" in mail.html
        assert str(order_id) in mail.text
        notification = await shop.wait_for_notification(
            user_id, template="order_confirmed", status="sent"
        )
        assert notification["event_id"] == str(envelope.id)

    async def test_the_same_event_delivered_twice_sends_one_email(self, shop: Shop) -> None:
        user_id, email = await shop.register()
        await shop.wait_for_mail(email, "Welcome")

        envelope = await shop.confirm_order(user_id)
        await shop.publish(envelope.payload(), envelope=envelope)
        await shop.wait_for_mail(email, "confirmed")
        await shop.wait_for_notification(user_id, template="order_confirmed", status="sent")
        await shop.publish(envelope.payload(), envelope=envelope)
        await asyncio.sleep(1.0)

        assert len(await shop.mails(email, "confirmed")) == 1
        assert len(await shop.notifications(user_id)) == 2  # welcome + the order

    async def test_an_event_redelivered_after_its_inbox_row_was_purged_sends_no_second_email(
        self, shop: Shop
    ) -> None:
        user_id, email = await shop.register()
        await shop.wait_for_mail(email, "Welcome")
        envelope = await shop.confirm_order(user_id)
        await shop.publish(envelope.payload(), envelope=envelope)
        first = await shop.wait_for_mail(email, "confirmed")
        await shop.wait_for_notification(user_id, template="order_confirmed", status="sent")
        # The receipt ages past the inbox retention and the service's own policy deletes it.
        async with shop.engine.begin() as conn:
            await conn.execute(
                update(inbox)
                .where(inbox.c.message_id == envelope.id)
                .values(received_at=datetime.now(UTC) - timedelta(days=30))
            )
        keep = timedelta(seconds=shop.settings.inbox_retention_seconds)
        purged = await purge(
            shop.engine, RetentionPolicy(inbox, "received_at", keep), service="notifications"
        )
        assert purged >= 1

        await shop.publish(envelope.payload(), envelope=envelope)  # a parked copy redriven
        await shop.wait_processed(envelope)
        await asyncio.sleep(1.0)  # room for a second email to arrive (it must not)

        # One notification per (event, template): the redelivery found it and sent nothing.
        mails = await shop.mails(email, "confirmed")
        assert len(mails) == 1
        assert mails[0].message_id == first.message_id
        assert len(await shop.notifications(user_id)) == 2  # welcome + the order

    async def test_failed_cancelled_and_refunded_orders_each_send_their_email(
        self, shop: Shop
    ) -> None:
        user_id, email = await shop.register()
        failed, cancelled, refunded = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

        await shop.publish(
            OrderFailed(
                order_id=failed,
                user_id=user_id,
                total_amount=Decimal("10.00"),
                currency="EUR",
                reason="declined",
            )
        )
        await shop.publish(
            OrderCancelled(
                order_id=cancelled, user_id=user_id, total_amount=Decimal("5.00"), currency="EUR"
            )
        )
        await shop.publish(
            PaymentRefunded(
                payment_id=uuid.uuid4(),
                order_id=refunded,
                user_id=user_id,
                amount=Decimal("7.25"),
                currency="GBP",
                provider_reference="re_123",
            )
        )

        failed_mail = await shop.wait_for_mail(email, "could not be completed")
        cancelled_mail = await shop.wait_for_mail(email, "was cancelled")
        refund_mail = await shop.wait_for_mail(email, "refund")
        assert short_id(failed) in failed_mail.subject
        assert failed_mail.text is not None
        assert "declined" in failed_mail.text
        assert short_id(cancelled) in cancelled_mail.subject
        assert (
            refund_mail.subject
            == f"Your refund for order {short_id(refunded)} is on its way (7.25 GBP)"
        )
        templates = {n["template"] for n in await shop.notifications(user_id)}
        assert {"order_failed", "order_cancelled", "payment_refunded"} <= templates


class TestSendContext:
    async def test_the_send_logs_with_the_causing_events_correlation_id(self, shop: Shop) -> None:
        user_id, email = await shop.register()
        await shop.wait_for_mail(email, "Welcome")
        confirmed = new_envelope(
            OrderConfirmed(
                order_id=uuid.uuid4(),
                user_id=user_id,
                total_amount=Decimal("5.00"),
                currency="USD",
                payment_id=uuid.uuid4(),
            ),
            producer="orders",
            correlation_id="corr-order-flow-1",
        )
        with captured_lines() as lines:
            await shop.publish(confirmed.payload(), envelope=confirmed)
            await shop.wait_for_notification(user_id, template="order_confirmed", status="sent")
            for _ in range(100):  # the line may follow the commit the wait above saw
                sent = [line for line in lines if line.get("event") == "notification.sent"]
                if sent:
                    break
                await asyncio.sleep(0.05)
        assert any(line.get("correlation_id") == "corr-order-flow-1" for line in sent), sent
        assert all(line.get("trace_id") for line in sent)
