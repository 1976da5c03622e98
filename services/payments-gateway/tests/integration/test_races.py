"""Webhooks racing each other, the consumer's own outcome and a refund: one outcome, one event.

Every round settles one payment by several writers at once. The guarded transitions must let
exactly one of them change it; the others answer 409 (a replay) or 200 without effect.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from servicekit.events import OrderCreated
from servicekit.testing.waiting import wait_until
from tests.integration.stack import Stack, StackFactory, a_refund_request
from tests.integration.test_webhooks import charge_event, deliver, pending_payment

ROUNDS = 10


async def _settled_once(stack: Stack, order: OrderCreated) -> str:
    """The payment's final status, once exactly one event announced it."""

    async def settled() -> bool:
        return (await stack.payment_of(order))["status"] != "pending"

    await wait_until(settled, timeout=5, what="the payment settled")
    status = str((await stack.payment_of(order))["status"])
    await stack.wait_for(f"payment.{status}", order.order_id)
    await asyncio.sleep(0.3)  # a bounded "nothing else arrives" check
    succeeded = await stack.published("payment.succeeded", order.order_id)
    failed = await stack.published("payment.failed", order.order_id)
    assert len(succeeded) + len(failed) == 1, (succeeded, failed)
    return status


class TestWebhooksRacingEachOther:
    async def test_concurrent_and_contradictory_webhooks_settle_a_payment_once(
        self, start_stack: StackFactory
    ) -> None:
        outcomes: Counter[str] = Counter()
        async with start_stack(webhooks=False) as stack:
            for _ in range(ROUNDS):
                order, payment = await pending_payment(stack)
                succeeded = charge_event(order, payment)
                bodies = [
                    succeeded,
                    succeeded,  # the same delivery twice at once
                    charge_event(order, payment),  # another event about the same charge
                    charge_event(order, payment, kind="failed"),
                ]
                responses = await asyncio.gather(*(deliver(stack, body) for body in bodies))
                statuses = [r.status_code for r in responses]
                assert set(statuses) <= {200, 409}, [r.text for r in responses]
                assert statuses[:2].count(409) == 1, statuses
                outcomes[await _settled_once(stack, order)] += 1
        assert sum(outcomes.values()) == ROUNDS


class TestWebhookRacingARefund:
    async def test_a_refund_requested_while_the_webhook_settles_refunds_once(
        self, start_stack: StackFactory
    ) -> None:
        # The provider settles its pending charges at once (pending_delay=0): the webhook the
        # test delivers says what the provider's own records say, so the refund is accepted.
        async with start_stack(
            webhooks=False, pending_delay=0.0, provider_defer_seconds=0.2
        ) as stack:
            for _ in range(ROUNDS // 2):
                order, payment = await pending_payment(stack)
                response, _ = await asyncio.gather(
                    deliver(stack, charge_event(order, payment)),
                    stack.publish(a_refund_request(order)),
                )
                assert response.status_code == 200, response.text
                [refunded] = await stack.wait_for("payment.refunded", order.order_id, timeout=30)
                assert str(refunded.payment_id) == payment["id"]
                assert (await stack.payment_of(order))["status"] == "refunded"
                ledger = await stack.ledger(order.order_id)
                assert sorted(entry["type"] for entry in ledger) == ["charge", "refund"]
