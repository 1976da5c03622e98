"""A provider that is down: the breaker caps the calls, payments wait, then complete or expire."""

from __future__ import annotations

import asyncio
import uuid

from tests.integration.stack import Stack, StackFactory, an_order

ORDERS = 30


async def charge_requests(stack: Stack) -> int:
    stats = await stack.stats()
    return int(stats["requests"].get("/v1/charges", 0))


class TestProviderOutage:
    async def test_payments_wait_out_an_outage_then_complete_with_one_charge_each(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack() as stack:
            settings = stack.settings
            await stack.faults(down=True)
            user_id = uuid.uuid4()
            orders = [an_order(user_id=user_id) for _ in range(ORDERS)]
            wanted = {order.order_id for order in orders}

            await asyncio.gather(*(stack.publish(order) for order in orders))
            await asyncio.sleep(3.0)

            # Deferred, not failed: every payment is pending, nothing was announced.
            listed = await stack.api.get(
                "/payments", params={"limit": 100}, headers=stack.auth(user_id)
            )
            assert listed.status_code == 200
            assert sorted(p["status"] for p in listed.json()["items"]) == ["pending"] * ORDERS
            announced = await stack.events.of_type("payment.failed")
            assert [d for _, d in announced if d.order_id in wanted] == []
            assert await stack.ledger() == []

            # The open circuit is visible and caps the calls: a call without the breaker would
            # make max_attempts requests per order on every redelivery.
            ready = await stack.api.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"]["payment_provider"].startswith("fail: circuit")
            during_outage = await charge_requests(stack)
            assert during_outage < ORDERS * settings.provider_max_attempts / 2
            await asyncio.sleep(2.0)
            assert await charge_requests(stack) - during_outage <= 4 * (
                settings.provider_max_attempts
            )

            await stack.faults(down=False)

            await stack.events.wait_for(
                "payment.succeeded", where=lambda d: d.order_id in wanted, count=ORDERS, timeout=30
            )
            charges = await stack.ledger()
            assert len(charges) == ORDERS
            assert {c["metadata"]["order_id"] for c in charges} == {str(o) for o in wanted}
            for order in orders[:3]:
                assert (await stack.payment_of(order))["status"] == "succeeded"
            ready = await stack.api.get("/health/ready")
            assert ready.json()["checks"]["payment_provider"] == "ok"
            print(
                f"\noutage: {during_outage} charge requests for {ORDERS} orders in 3 s "
                f"(up to {ORDERS * settings.provider_max_attempts} per round without a breaker), "
                f"{await charge_requests(stack)} in all"
            )

    async def test_payments_fail_as_provider_unavailable_after_the_deadline(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(provider_deadline_seconds=2.0) as stack:
            await stack.faults(down=True)
            orders = [an_order() for _ in range(5)]
            wanted = {order.order_id for order in orders}

            await asyncio.gather(*(stack.publish(order) for order in orders))

            # Pending at first (deferred) ...
            await asyncio.sleep(0.5)
            assert (await stack.payment_of(orders[0]))["status"] == "pending"
            # ... then failed for good once the deadline passed.
            failed = await stack.events.wait_for(
                "payment.failed", where=lambda d: d.order_id in wanted, count=5, timeout=15
            )
            assert {data.reason for _, data in failed} == {"provider_unavailable"}
            payment = await stack.payment_of(orders[0])
            assert payment["status"] == "failed"
            assert payment["reason"] == "provider_unavailable"

            # A provider that comes back later does not charge them any more.
            await stack.faults(down=False)
            await asyncio.sleep(1.0)
            assert await stack.ledger() == []
            succeeded = await stack.events.of_type("payment.succeeded")
            assert [d for _, d in succeeded if d.order_id in wanted] == []
