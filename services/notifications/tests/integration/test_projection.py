"""The service's own projection of users: updates, order safety, erasure, late arrivals."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
from sqlalchemy import text

from servicekit.events import UserDeleted, UserRegistered, UserUpdated
from servicekit.testing.waiting import wait_until

from .support import Shop, StartShop, new_email


async def projected_email(shop: Shop, user_id: uuid.UUID) -> str | None:
    async with shop.engine.connect() as conn:
        return await conn.scalar(
            text("SELECT email FROM user_contacts WHERE user_id = :id"), {"id": user_id}
        )


class TestUserUpdated:
    async def test_the_next_email_goes_to_the_updated_address(self, shop: Shop) -> None:
        user_id, old_email = await shop.register(name="Ada")
        await shop.wait_for_mail(old_email, "Welcome")
        new_address = new_email()

        await shop.publish(
            UserUpdated(
                user_id=user_id,
                email=new_address,
                name="Ada King",
                updated_at=datetime.now(UTC),
            )
        )

        async def updated() -> bool:
            return await projected_email(shop, user_id) == new_address

        await wait_until(updated, what="the update to be applied")
        await shop.confirm_order(user_id)

        mail = await shop.wait_for_mail(new_address, "confirmed")
        assert mail.text is not None
        assert "Hello Ada King," in mail.text
        assert await shop.mails(old_email, "confirmed") == []
        notification = await shop.wait_for_notification(
            user_id, template="order_confirmed", status="sent"
        )
        assert notification["recipient"] == new_address

    async def test_an_older_update_arriving_late_is_ignored(self, shop: Shop) -> None:
        user_id, _email = await shop.register()
        now = datetime.now(UTC)
        current, stale = new_email(), new_email()
        newer = await shop.publish(
            UserUpdated(user_id=user_id, email=current, name="Now", updated_at=now)
        )
        await shop.wait_processed(newer)

        older = await shop.publish(
            UserUpdated(
                user_id=user_id, email=stale, name="Before", updated_at=now - timedelta(seconds=5)
            )
        )
        await shop.wait_processed(older)

        assert await projected_email(shop, user_id) == current


class TestUserDeleted:
    async def test_deletion_erases_the_projection_and_the_notifications(self, shop: Shop) -> None:
        # Registered and deleted a few seconds ago, events arriving now: a token minted now is
        # newer than the deletion, so the shared denylist lets it through and this service's
        # own answer (404, nothing listed) is what the test sees.
        registered_at = datetime.now(UTC) - timedelta(seconds=10)
        user_id, email = uuid.uuid4(), new_email()
        await shop.publish(
            UserRegistered(
                user_id=user_id, email=email, name="Gone Soon", registered_at=registered_at
            )
        )
        await shop.confirm_order(user_id)
        welcome = await shop.wait_for_notification(user_id, template="welcome", status="sent")
        order = await shop.wait_for_notification(user_id, template="order_confirmed", status="sent")

        deleted = await shop.publish(
            UserDeleted(user_id=user_id, deleted_at=registered_at + timedelta(seconds=5))
        )
        await shop.wait_processed(deleted)

        assert await shop.count_rows("user_contacts", user_id) == 0
        assert await shop.count_rows("notifications", user_id) == 0
        headers = shop.headers(user_id)
        for notification in (welcome, order):
            response = await shop.client.get(
                f"/notifications/{notification['id']}", headers=headers
            )
            assert response.status_code == 404
        assert await shop.notifications(user_id) == []

    async def test_events_arriving_after_the_deletion_do_not_bring_the_user_back(
        self, shop: Shop
    ) -> None:
        user_id, email = uuid.uuid4(), new_email()
        deleted = await shop.publish(UserDeleted(user_id=user_id, deleted_at=datetime.now(UTC)))
        await shop.wait_processed(deleted)

        late = [
            await shop.publish(
                UserRegistered(
                    user_id=user_id,
                    email=email,
                    name="Late",
                    registered_at=datetime.now(UTC) - timedelta(minutes=1),
                )
            ),
            await shop.publish(
                UserUpdated(user_id=user_id, email=email, name="Late", updated_at=datetime.now(UTC))
            ),
            await shop.confirm_order(user_id),
        ]
        for envelope in late:
            await shop.wait_processed(envelope)
        await asyncio.sleep(0.3)

        assert await shop.count_rows("user_contacts", user_id) == 0
        assert await shop.count_rows("notifications", user_id) == 0
        assert await shop.mails(email) == []


class TestOrderBeforeUser:
    async def test_an_order_event_waits_for_the_user_and_is_then_delivered(
        self, shop: Shop
    ) -> None:
        user_id, email = uuid.uuid4(), new_email()
        order = await shop.confirm_order(user_id)
        await asyncio.sleep(1.0)  # several deferrals, nothing recorded yet
        assert await shop.count_rows("notifications", user_id) == 0

        await shop.publish(
            UserRegistered(
                user_id=user_id, email=email, name="Late Bird", registered_at=datetime.now(UTC)
            )
        )

        mail = await shop.wait_for_mail(email, "confirmed")
        assert mail.text is not None
        assert "Hello Late Bird," in mail.text
        notification = await shop.wait_for_notification(
            user_id, template="order_confirmed", status="sent"
        )
        assert notification["event_id"] == str(order.id)
        await shop.wait_for_mail(email, "Welcome")

    async def test_past_the_wait_deadline_it_is_parked_for_an_operator_not_dropped(
        self, start_shop: StartShop
    ) -> None:
        shop = await start_shop(recipient_wait_seconds=0.5)
        order = await shop.confirm_order(uuid.uuid4())
        dlq = f"{shop.settings.events_exchange}.notifications.orders.dlq"

        connection = await aio_pika.connect(shop.settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(dlq, passive=True)

            async def parked() -> aio_pika.abc.AbstractIncomingMessage | None:
                # Other messages stay unacknowledged until the channel closes, then return.
                while (message := await queue.get(no_ack=False, fail=False)) is not None:
                    if message.message_id == str(order.id):
                        await message.ack()
                        return message
                return None

            message = await wait_until(parked, timeout=15, what="the order event in the DLQ")
        assert "RecipientUnknown" in str(message.headers["x-death-reason"])
