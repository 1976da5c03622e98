"""Payment results through the real broker drive the state machine exactly once."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from orders_service.models import Order, OrderItem
from servicekit.events import (
    OrderConfirmed,
    OrderFailed,
    OrderRefundRequested,
    PaymentFailed,
    PaymentRefunded,
    new_envelope,
)
from servicekit.testing.capture import EventCapture
from tests.integration.support import Publish, Service, of_order, payment_succeeded


async def count(published: EventCapture, event_type: str, order_id: str) -> int:
    """How many events of a type the service published for an order (after a quiet moment)."""
    await asyncio.sleep(0.4)
    return len([d for _, d in await published.of_type(event_type) if of_order(order_id)(d)])


class TestPaymentEvents:
    async def test_payment_succeeded_confirms_the_order(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)
        payment = payment_succeeded(order, user_id)

        await publish(payment)

        confirmed = await orders.wait_for_status(user_id, order["id"], "confirmed")
        assert confirmed["payment_id"] == str(payment.payment_id)
        [(envelope, data)] = await published.wait_for(
            "order.confirmed", where=of_order(order["id"])
        )
        assert isinstance(data, OrderConfirmed)
        assert data.payment_id == payment.payment_id
        assert data.total_amount == Decimal(order["total_amount"])
        assert data.user_id == user_id
        assert envelope.causation_id is not None

    async def test_payment_failed_fails_the_order(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)

        await publish(
            PaymentFailed(
                payment_id=uuid.uuid4(),
                order_id=uuid.UUID(order["id"]),
                user_id=user_id,
                amount=Decimal(order["total_amount"]),
                currency=order["currency"],
                reason="declined",
            )
        )

        failed = await orders.wait_for_status(user_id, order["id"], "failed")
        assert failed["status_reason"] == "declined"
        [(_, data)] = await published.wait_for("order.failed", where=of_order(order["id"]))
        assert isinstance(data, OrderFailed)
        assert data.reason == "declined"

    async def test_a_payment_after_cancelling_is_refunded_and_the_order_stays_cancelled(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)
        await orders.client.post(f"/orders/{order['id']}/cancel", headers=orders.auth(user_id))
        payment = payment_succeeded(order, user_id)

        await publish(payment)

        [(_, data)] = await published.wait_for(
            "order.refund_requested", where=of_order(order["id"])
        )
        assert isinstance(data, OrderRefundRequested)
        assert data.payment_id == payment.payment_id
        assert data.amount == payment.amount
        assert data.reason == "order_cancelled"
        assert (await orders.get(user_id, order["id"]))["status"] == "cancelled"
        assert await count(published, "order.confirmed", order["id"]) == 0

        # The refund landing later changes nothing: the order never counted as paid.
        await publish(
            PaymentRefunded(
                payment_id=payment.payment_id,
                order_id=payment.order_id,
                user_id=user_id,
                amount=payment.amount,
                currency=payment.currency,
                provider_reference="re_late",
            )
        )
        await asyncio.sleep(0.4)
        assert (await orders.get(user_id, order["id"]))["status"] == "cancelled"

    async def test_the_same_event_delivered_twice_applies_once(
        self,
        orders: Service,
        publish: Publish,
        user_id: uuid.UUID,
        published: EventCapture,
    ) -> None:
        order = await orders.place(user_id)
        envelope = new_envelope(payment_succeeded(order, user_id), producer="payments-gateway")
        bus = orders.runtime.bus

        await bus.publish(envelope)
        await bus.publish(envelope)

        await orders.wait_for_status(user_id, order["id"], "confirmed")
        assert await count(published, "order.confirmed", order["id"]) == 1
        assert await count(published, "order.refund_requested", order["id"]) == 0

    async def test_a_republished_payment_with_a_new_event_id_applies_once(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)
        payment = payment_succeeded(order, user_id)

        await publish(payment)
        await orders.wait_for_status(user_id, order["id"], "confirmed")
        await publish(payment)

        assert await count(published, "order.confirmed", order["id"]) == 1
        assert await count(published, "order.refund_requested", order["id"]) == 0

    async def test_a_second_payment_for_a_paid_order_is_refunded(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)
        first = payment_succeeded(order, user_id)
        await publish(first)
        await orders.wait_for_status(user_id, order["id"], "confirmed")
        second = payment_succeeded(order, user_id)

        await publish(second)

        [(_, data)] = await published.wait_for(
            "order.refund_requested", where=of_order(order["id"])
        )
        assert isinstance(data, OrderRefundRequested)
        assert data.payment_id == second.payment_id
        assert data.reason == "duplicate_payment"
        confirmed = await orders.get(user_id, order["id"])
        assert confirmed["status"] == "confirmed"
        assert confirmed["payment_id"] == str(first.payment_id)

    async def test_a_payment_for_another_amount_fails_the_order_and_is_refunded(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)
        short = payment_succeeded(order, user_id).model_copy(update={"amount": Decimal("0.01")})

        await publish(short)

        failed = await orders.wait_for_status(user_id, order["id"], "failed")
        assert failed["status_reason"] == "amount_mismatch"
        [(_, refund)] = await published.wait_for(
            "order.refund_requested", where=of_order(order["id"])
        )
        assert isinstance(refund, OrderRefundRequested)
        assert refund.amount == Decimal("0.01")
        await published.wait_for("order.failed", where=of_order(order["id"]))

    async def test_a_payment_that_arrives_before_its_order_is_applied_once_it_exists(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order_id = uuid.uuid4()
        early = {"id": str(order_id), "total_amount": "7.50", "currency": "EUR"}
        payment = payment_succeeded(early, user_id)

        await publish(payment)
        await asyncio.sleep(0.6)  # delivered, found no order, deferred at least once
        async with orders.runtime.sessions() as session, session.begin():
            order = Order(
                id=order_id,
                user_id=user_id,
                status="pending",
                currency="EUR",
                total_amount=Decimal("7.50"),
            )
            order.items = [OrderItem(position=0, sku="X", quantity=3, unit_price=Decimal("2.50"))]
            session.add(order)

        confirmed = await orders.wait_for_status(user_id, str(order_id), "confirmed", timeout=8)
        assert confirmed["payment_id"] == str(payment.payment_id)
        await published.wait_for("order.confirmed", where=of_order(order_id))
        assert await count(published, "order.confirmed", str(order_id)) == 1

    async def test_a_refund_for_an_already_refunded_order_changes_nothing(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)
        payment = payment_succeeded(order, user_id)
        await publish(payment)
        await orders.wait_for_status(user_id, order["id"], "confirmed")
        await orders.client.post(f"/orders/{order['id']}/cancel", headers=orders.auth(user_id))
        refund = PaymentRefunded(
            payment_id=payment.payment_id,
            order_id=payment.order_id,
            user_id=user_id,
            amount=payment.amount,
            currency=payment.currency,
            provider_reference="re_1",
        )
        await publish(refund)
        refunded = await orders.wait_for_status(user_id, order["id"], "refunded")

        await publish(refund)

        await asyncio.sleep(0.4)
        assert await orders.get(user_id, order["id"]) == refunded

    async def test_only_the_refund_of_the_orders_own_payment_completes_it(
        self, orders: Service, publish: Publish, user_id: uuid.UUID
    ) -> None:
        order = await orders.place(user_id)
        payment = payment_succeeded(order, user_id)
        await publish(payment)
        await orders.wait_for_status(user_id, order["id"], "confirmed")
        await orders.client.post(f"/orders/{order['id']}/cancel", headers=orders.auth(user_id))

        def refund_of(payment_id: uuid.UUID) -> PaymentRefunded:
            return PaymentRefunded(
                payment_id=payment_id,
                order_id=payment.order_id,
                user_id=user_id,
                amount=payment.amount,
                currency=payment.currency,
                provider_reference="re_x",
            )

        await publish(refund_of(uuid.uuid4()))
        await asyncio.sleep(0.4)
        assert (await orders.get(user_id, order["id"]))["status"] == "refund_pending"

        await publish(refund_of(payment.payment_id))
        await orders.wait_for_status(user_id, order["id"], "refunded")
