"""POST /orders/{id}/cancel: pending orders are cancelled, confirmed ones refunded."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from servicekit.events import OrderCancelled, OrderRefundRequested, PaymentRefunded
from servicekit.testing.capture import EventCapture
from tests.integration.support import Publish, Service, confirm, of_order


class TestCancel:
    async def test_a_pending_order_is_cancelled_and_order_cancelled_published(
        self, orders: Service, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)

        response = await orders.client.post(
            f"/orders/{order['id']}/cancel", headers=orders.auth(user_id)
        )

        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        assert response.json()["updated_at"] > order["updated_at"]
        assert (await orders.get(user_id, order["id"]))["status"] == "cancelled"
        [(_, data)] = await published.wait_for("order.cancelled", where=of_order(order["id"]))
        assert isinstance(data, OrderCancelled)
        assert data.reason == "cancelled_by_user"
        assert data.total_amount == Decimal(order["total_amount"])

    async def test_a_confirmed_order_waits_for_its_refund_then_is_refunded(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)
        payment_id = await confirm(orders, publish, order, user_id)

        response = await orders.client.post(
            f"/orders/{order['id']}/cancel", headers=orders.auth(user_id)
        )

        assert response.status_code == 200
        assert response.json()["status"] == "refund_pending"
        [(_, data)] = await published.wait_for(
            "order.refund_requested", where=of_order(order["id"])
        )
        assert isinstance(data, OrderRefundRequested)
        assert data.payment_id == payment_id
        assert data.amount == Decimal(order["total_amount"])
        assert data.currency == order["currency"]
        assert data.reason == "cancelled_by_user"

        await publish(
            PaymentRefunded(
                payment_id=payment_id,
                order_id=uuid.UUID(order["id"]),
                user_id=user_id,
                amount=data.amount,
                currency=data.currency,
                provider_reference="re_1",
            )
        )

        await orders.wait_for_status(user_id, order["id"], "refunded")

    async def test_orders_past_cancelling_are_409(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        order = await orders.place(user_id)
        cancel = f"/orders/{order['id']}/cancel"
        await orders.client.post(cancel, headers=orders.auth(user_id))

        response = await orders.client.post(cancel, headers=orders.auth(user_id))

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "invalid_state_transition"

    async def test_an_unknown_order_is_404(self, orders: Service, user_id: uuid.UUID) -> None:
        response = await orders.client.post(
            f"/orders/{uuid.uuid4()}/cancel", headers=orders.auth(user_id)
        )

        assert response.status_code == 404

    async def test_two_concurrent_cancels_cancel_once(
        self, orders: Service, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)
        cancel = f"/orders/{order['id']}/cancel"

        responses = await asyncio.gather(
            *(orders.client.post(cancel, headers=orders.auth(user_id)) for _ in range(5))
        )

        assert sorted(r.status_code for r in responses) == [200, 409, 409, 409, 409]
        await published.wait_for("order.cancelled", where=of_order(order["id"]))
        await asyncio.sleep(0.3)
        cancelled = await published.of_type("order.cancelled")
        assert len([d for _, d in cancelled if of_order(order["id"])(d)]) == 1
