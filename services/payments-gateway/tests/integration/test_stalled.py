"""A payment whose deferred order.created is lost anyway (purged from its delay queue) is still
moved on by the sweeper: charged once when the provider is back, or failed at its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import aio_pika

from tests.integration.stack import Stack, StackFactory, an_order

# Deferred for 30 s into the 60 s delay tier, so the copy waits there long enough to be purged;
# the sweeper looks every 0.2 s for payments stalled over 1 s. The bounds checked (20 s) are
# wide for a loaded machine.
LONG_DEFERRAL = {
    "retry_delays_ms": [200, 60_000],
    "provider_defer_seconds": 30.0,
    "breaker_reset_seconds": 30.0,
    "payment_stall_seconds": 1.0,
    "reconcile_interval_seconds": 0.2,
}


async def lose_the_deferred_message(stack: Stack) -> None:
    """Wait until the deferred copy sits in the delay queue, then purge it there."""
    queue = f"{stack.settings.events_exchange}.{stack.settings.service_name}.payments"
    channel = await stack.orders_bus.connection.channel()
    try:
        for _ in range(200):
            for name in (f"{queue}.delay.60000ms", f"{queue}.retry.60000ms"):
                with contextlib.suppress(aio_pika.exceptions.ChannelNotFoundEntity):
                    delayed = await channel.declare_queue(name, passive=True)
                    if delayed.declaration_result.message_count:
                        await delayed.purge()
                        return
                if channel.is_closed:
                    channel = await stack.orders_bus.connection.channel()
            await asyncio.sleep(0.1)
        raise AssertionError("the deferred payment never reached its delay queue")
    finally:
        if not channel.is_closed:
            await channel.close()


class TestStalledPayments:
    async def test_a_lost_deferral_is_charged_once_when_the_provider_is_back(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(**LONG_DEFERRAL) as stack:
            await stack.faults(down=True)
            order = an_order(user_id=uuid.uuid4())
            await stack.publish(order)
            await lose_the_deferred_message(stack)
            assert (await stack.payment_of(order))["status"] == "pending"

            await stack.faults(down=False)

            [succeeded] = await stack.wait_for("payment.succeeded", order.order_id, timeout=20)
            payment = await stack.payment_of(order)
            assert payment["status"] == "succeeded"
            assert str(succeeded.payment_id) == payment["id"]
            [charge] = [e for e in await stack.ledger(order.order_id) if e["type"] == "charge"]
            assert charge["idempotency_key"] == payment["id"]

    async def test_a_lost_deferral_fails_at_its_deadline_as_provider_unavailable(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(**LONG_DEFERRAL, provider_deadline_seconds=3.0) as stack:
            await stack.faults(down=True)
            order = an_order(user_id=uuid.uuid4())
            await stack.publish(order)
            await lose_the_deferred_message(stack)

            [failed] = await stack.wait_for("payment.failed", order.order_id, timeout=20)

            assert failed.reason == "provider_unavailable"
            assert (await stack.payment_of(order))["status"] == "failed"
            assert await stack.ledger(order.order_id) == []
