"""user.deleted: the user's pending orders are cancelled; paid ones are left alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from servicekit.events import OrderCancelled, UserDeleted
from servicekit.testing.capture import EventCapture
from tests.integration.support import Publish, Service, confirm, of_user


class TestUserDeleted:
    async def test_pending_orders_are_cancelled_with_reason_user_deleted(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        pending = [await orders.place(user_id) for _ in range(2)]
        paid = await orders.place(user_id)
        await confirm(orders, publish, paid, user_id)
        bystander = uuid.uuid4()
        unrelated = await orders.place(bystander)

        await publish(UserDeleted(user_id=user_id, deleted_at=datetime.now(UTC)))

        events = await published.wait_for("order.cancelled", where=of_user(user_id), count=2)
        cancelled = [d for _, d in events if isinstance(d, OrderCancelled)]
        assert {str(d.order_id) for d in cancelled} == {o["id"] for o in pending}
        assert {d.reason for d in cancelled} == {"user_deleted"}
        # The deleted user's tokens are refused now; an admin looks instead.
        admin = orders.auth(uuid.uuid4(), admin=True)
        for order in pending:
            response = await orders.client.get(f"/orders/{order['id']}", headers=admin)
            assert response.json()["status"] == "cancelled"
            assert response.json()["status_reason"] == "user_deleted"
        response = await orders.client.get(f"/orders/{paid['id']}", headers=admin)
        assert response.json()["status"] == "confirmed"
        assert (await orders.get(bystander, unrelated["id"]))["status"] == "pending"
