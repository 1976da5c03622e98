"""Delivery when the SMTP server is down, refusing, or the sender died mid-send."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from notifications_service import service
from notifications_service.rendering import EmailRenderer
from servicekit.events import UserRegistered, new_envelope
from servicekit.testing.waiting import wait_until
from svctools.smtp_sink import SmtpSink  # type: ignore[import-untyped]

from .support import Shop, StartShop, new_email


class TestWakeUp:
    async def test_a_recorded_email_is_sent_at_once_not_at_the_next_poll(
        self, start_shop: StartShop, sink: SmtpSink
    ) -> None:
        # The dispatcher's fallback poll is a minute away: only the wake-up the recording
        # transaction sends at commit gets the email out within the wait below.
        shop = await start_shop(dispatch_poll_seconds=60.0)
        _user_id, email = await shop.register()

        await shop.wait_for_mail(email, "Welcome", timeout=5.0)


class TestSmtpOutage:
    async def test_mail_recorded_while_smtp_is_down_is_delivered_once_when_it_is_back(
        self, shop: Shop, sink: SmtpSink
    ) -> None:
        user_id, email = await shop.register()
        await shop.wait_for_mail(email, "Welcome")
        await sink.stop()

        await shop.confirm_order(user_id)

        async def retried() -> bool:
            items = await shop.notifications(user_id)
            return any(n["template"] == "order_confirmed" and n["attempts"] >= 2 for n in items)

        await wait_until(retried, what="failed attempts while SMTP is down")
        pending = next(
            n for n in await shop.notifications(user_id) if n["template"] == "order_confirmed"
        )
        assert pending["status"] == "pending"
        assert pending["sent_at"] is None

        async with SmtpSink(port=sink.port, maildir=sink.maildir):
            await shop.wait_for_mail(email, "confirmed")
            sent = await shop.wait_for_notification(
                user_id, template="order_confirmed", status="sent"
            )
            await asyncio.sleep(0.5)

        assert len(await shop.mails(email, "confirmed")) == 1
        assert sent["attempts"] > 1
        assert sent["sent_at"] is not None


class TestSmtpRefusing:
    async def test_mail_refused_past_the_deadline_is_marked_failed_in_the_api(
        self, start_shop: StartShop, sink: SmtpSink
    ) -> None:
        shop = await start_shop(delivery_deadline_seconds=1.5)
        sink.reject = True

        user_id, email = await shop.register()

        failed = await shop.wait_for_notification(user_id, template="welcome", status="failed")
        assert failed["attempts"] >= 2
        assert failed["sent_at"] is None
        detail = await shop.client.get(
            f"/notifications/{failed['id']}", headers=shop.headers(user_id)
        )
        assert detail.status_code == 200
        assert detail.json()["status"] == "failed"
        sink.reject = False
        await asyncio.sleep(0.5)  # a failed notification is not retried any more
        assert await shop.mails(email) == []
        ready = await shop.client.get("/health/ready")
        assert ready.status_code == 200  # SMTP trouble does not take the API down
        assert ready.json()["checks"]["smtp"].startswith("fail")


class TestCrashBetweenSendAndCommit:
    async def test_a_row_left_sending_is_resent_only_after_its_lease_with_the_same_message_id(
        self, start_shop: StartShop
    ) -> None:
        # The state a crash leaves: the row was claimed (`sending`, attempt 1) and its sender
        # died. Record it with the service's own function, then expire the lease by hand.
        shop = await start_shop()
        user_id, email = uuid.uuid4(), new_email()
        envelope = new_envelope(
            UserRegistered(
                user_id=user_id, email=email, name="Grace", registered_at=datetime.now(UTC)
            ),
            producer="auth",
        )
        async with AsyncSession(shop.engine) as session, session.begin():
            await service.apply_user_registered(
                session=session,
                envelope=envelope,
                data=envelope.payload(),  # type: ignore[arg-type]
                renderer=EmailRenderer(),
                deliver_within=timedelta(minutes=1),
            )
            await session.execute(
                text(
                    "UPDATE notifications SET status = 'sending', attempts = 1, "
                    "next_attempt_at = now() + interval '1 hour' WHERE event_id = :event_id"
                ),
                {"event_id": envelope.id},
            )

        await asyncio.sleep(1.0)
        assert await shop.mails(email) == []  # the lease still holds: nobody resends

        async with shop.engine.begin() as conn:
            await conn.execute(
                text("UPDATE notifications SET next_attempt_at = now() WHERE event_id = :id"),
                {"id": envelope.id},
            )
        mail = await shop.wait_for_mail(email)
        sent = await shop.wait_for_notification(user_id, template="welcome", status="sent")

        assert mail.message_id == f"<{envelope.id}.welcome@shop.local>"
        assert sent["attempts"] == 2
        assert len(await shop.mails(email)) == 1
