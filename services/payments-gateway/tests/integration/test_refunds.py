"""Refund requests give the money back once, through the real provider simulator."""

from __future__ import annotations

import asyncio

from servicekit.events import new_envelope
from tests.integration.stack import Stack, a_refund_request, an_order


class TestRefunds:
    async def test_a_refund_request_refunds_the_charge_once_and_is_announced(
        self, stack: Stack
    ) -> None:
        order = an_order(amount="35.50")
        await stack.publish(order)
        [succeeded] = await stack.wait_for("payment.succeeded", order.order_id)
        request = new_envelope(a_refund_request(order), producer="orders")

        # The same request twice, and a second request for the same order.
        await asyncio.gather(
            stack.orders_bus.publish(request),
            stack.orders_bus.publish(request),
            stack.publish(a_refund_request(order)),
        )

        [refunded] = await stack.wait_for("payment.refunded", order.order_id)
        await asyncio.sleep(1.0)  # room for the other deliveries to do (nothing) wrong
        assert len(await stack.published("payment.refunded", order.order_id)) == 1
        entries = await stack.ledger(order.order_id)
        refunds = [e for e in entries if e["type"] == "refund"]
        assert len(refunds) == 1
        assert refunds[0]["charge_id"] == succeeded.provider_reference
        assert refunds[0]["amount"] == "35.50"
        assert refunds[0]["idempotency_key"] == f"refund-{succeeded.payment_id}"
        assert refunded.payment_id == succeeded.payment_id
        assert refunded.provider_reference == refunds[0]["id"]
        assert str(refunded.amount) == "35.50"
        payment = await stack.payment_of(order)
        assert payment["status"] == "refunded"
        assert payment["provider_reference"] == succeeded.provider_reference

    async def test_a_refund_request_for_a_declined_payment_refunds_nothing(
        self, stack: Stack
    ) -> None:
        order = an_order(card="tok_decline")
        await stack.publish(order)
        await stack.wait_for("payment.failed", order.order_id)

        await stack.publish(a_refund_request(order))

        await asyncio.sleep(1.0)
        assert await stack.ledger(order.order_id) == []
        assert await stack.published("payment.refunded", order.order_id) == []
        assert (await stack.payment_of(order))["status"] == "failed"

    async def test_a_refund_request_that_overtakes_its_order_waits_for_the_payment(
        self, stack: Stack
    ) -> None:
        order = an_order()

        await stack.publish(a_refund_request(order))
        await asyncio.sleep(0.5)
        await stack.publish(order)

        await stack.wait_for("payment.succeeded", order.order_id)
        await stack.wait_for("payment.refunded", order.order_id, timeout=10)
        types = sorted(e["type"] for e in await stack.ledger(order.order_id))
        assert types == ["charge", "refund"]
        assert (await stack.payment_of(order))["status"] == "refunded"

    async def test_a_refund_waits_out_an_outage(self, stack: Stack) -> None:
        order = an_order()
        await stack.publish(order)
        await stack.wait_for("payment.succeeded", order.order_id)
        await stack.faults(down=True)

        await stack.publish(a_refund_request(order))
        await asyncio.sleep(1.5)
        assert (await stack.payment_of(order))["status"] == "succeeded"
        await stack.faults(down=False)

        await stack.wait_for("payment.refunded", order.order_id, timeout=10)
        refunds = [e for e in await stack.ledger(order.order_id) if e["type"] == "refund"]
        assert len(refunds) == 1
