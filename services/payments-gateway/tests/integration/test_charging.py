"""Orders are charged exactly once through the real provider simulator, over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from payments_gateway.models import inbox
from servicekit.db import create_engine
from servicekit.events import new_envelope
from servicekit.retention import RetentionPolicy, purge
from servicekit.testing.waiting import wait_until
from tests.integration.stack import Stack, StackFactory, an_order


class TestCharging:
    async def test_a_new_order_is_charged_once_and_announced(self, stack: Stack) -> None:
        order = an_order(amount="21.00")

        await stack.publish(order)

        [succeeded] = await stack.wait_for("payment.succeeded", order.order_id)
        [charge] = await stack.ledger(order.order_id)
        assert charge["type"] == "charge"
        assert charge["amount"] == "21.00"
        assert charge["currency"] == "USD"
        assert charge["metadata"] == {
            "order_id": str(order.order_id),
            "payment_id": str(succeeded.payment_id),
        }
        assert charge["idempotency_key"] == str(succeeded.payment_id)
        assert succeeded.provider_reference == charge["id"]
        assert succeeded.user_id == order.user_id
        assert str(succeeded.amount) == "21.00"

        payment = await stack.payment_of(order)
        assert payment["id"] == str(succeeded.payment_id)
        assert payment["status"] == "succeeded"
        assert payment["amount"] == "21.00"
        assert payment["currency"] == "USD"
        assert payment["reason"] is None
        assert payment["provider_reference"] == charge["id"]
        assert payment["created_at"].endswith("Z")

    async def test_another_user_neither_sees_nor_lists_the_payment(self, stack: Stack) -> None:
        order = an_order()
        await stack.publish(order)
        [succeeded] = await stack.wait_for("payment.succeeded", order.order_id)
        stranger = stack.auth(uuid.uuid4())

        listed = await stack.api.get(
            "/payments", params={"order_id": str(order.order_id)}, headers=stranger
        )
        fetched = await stack.api.get(f"/payments/{succeeded.payment_id}", headers=stranger)
        owner = await stack.api.get(
            f"/payments/{succeeded.payment_id}", headers=stack.auth(order.user_id)
        )
        admin = await stack.api.get(
            f"/payments/{succeeded.payment_id}", headers=stack.auth(uuid.uuid4(), admin=True)
        )

        assert listed.status_code == 200
        assert listed.json() == {"items": [], "next_cursor": None}
        assert fetched.status_code == 404
        assert fetched.json()["error"]["code"] == "payment_not_found"
        assert owner.status_code == 200
        assert owner.json()["status"] == "succeeded"
        assert admin.status_code == 200

    async def test_a_declined_card_fails_the_payment_and_moves_no_money(self, stack: Stack) -> None:
        order = an_order(card="tok_decline_insufficient_funds")

        await stack.publish(order)

        [failed] = await stack.wait_for("payment.failed", order.order_id)
        assert failed.reason == "declined"
        payment = await stack.payment_of(order)
        assert payment["status"] == "failed"
        assert payment["reason"] == "declined"
        assert payment["provider_reference"] is None
        assert await stack.ledger(order.order_id) == []
        assert await stack.published("payment.succeeded", order.order_id) == []

    async def test_a_duplicated_order_event_makes_one_payment_and_one_charge(
        self, stack: Stack
    ) -> None:
        order = an_order()
        envelope = new_envelope(order, producer="orders")
        second_envelope = new_envelope(order, producer="orders")

        # The same message twice and a second message for the same order, all at once.
        await asyncio.gather(
            stack.orders_bus.publish(envelope),
            stack.orders_bus.publish(envelope),
            stack.orders_bus.publish(second_envelope),
        )

        await stack.wait_for("payment.succeeded", order.order_id)
        await wait_until(
            lambda: stack.received(envelope, second_envelope), what="both messages applied"
        )
        await stack.one_outcome(order, "payment.succeeded")

    async def test_a_charge_whose_answer_was_lost_is_not_made_twice(
        self, start_stack: StackFactory
    ) -> None:
        # Every answer takes longer than the client waits: the provider charges, the gateway
        # never hears of it, retries with the same key, then defers the payment.
        async with start_stack(provider_read_timeout=0.3) as stack:
            await stack.faults(latency_ms=1000)
            order = an_order()

            await stack.publish(order)
            await asyncio.sleep(1.5)
            assert (await stack.payment_of(order))["status"] == "pending"
            [charge] = await stack.ledger(order.order_id)
            await stack.faults(latency_ms=0)

            [succeeded] = await stack.wait_for("payment.succeeded", order.order_id)
            assert succeeded.provider_reference == charge["id"]
            assert len(await stack.ledger(order.order_id)) == 1
            assert (await stack.stats())["requests"]["/v1/charges"] > 1

    async def test_a_flaky_slow_provider_still_charges_every_order_exactly_once(
        self, stack: Stack
    ) -> None:
        await stack.faults(error_rate=0.3, latency_ms=100)
        orders = [an_order() for _ in range(30)]
        started = time.perf_counter()

        await asyncio.gather(*(stack.publish(order) for order in orders))

        wanted = {order.order_id for order in orders}
        await stack.events.wait_for(
            "payment.succeeded", where=lambda d: d.order_id in wanted, count=30, timeout=60
        )
        elapsed = time.perf_counter() - started
        stats = await stack.stats()
        charges = [
            entry
            for entry in await stack.ledger()
            if entry["type"] == "charge" and uuid.UUID(entry["metadata"]["order_id"]) in wanted
        ]
        assert len(charges) == 30
        assert {entry["metadata"]["order_id"] for entry in charges} == {str(o) for o in wanted}
        assert len({entry["idempotency_key"] for entry in charges}) == 30
        assert stats["faulted"] > 0, stats  # the faults were real, and were retried through
        succeeded = await stack.events.of_type("payment.succeeded")
        assert len([d for _, d in succeeded if d.order_id in wanted]) == 30
        print(
            f"\n30 orders at 30% 5xx + 100 ms: {elapsed:.1f}s, "
            f"{stats['requests'].get('/v1/charges')} charge requests, {stats['faulted']} faulted"
        )


class TestRedeliveryAfterRetention:
    async def test_an_order_event_redelivered_after_its_inbox_row_was_purged_is_not_charged_again(
        self, stack: Stack
    ) -> None:
        order = an_order()
        envelope = new_envelope(order, producer="orders")
        await stack.orders_bus.publish(envelope)
        await stack.wait_for("payment.succeeded", order.order_id)
        engine = create_engine(stack.settings.database_url, pool_size=1, max_overflow=0)
        receipt = select(func.count()).select_from(inbox).where(inbox.c.message_id == envelope.id)
        try:
            # The receipt ages past the inbox retention and the service's own policy deletes it.
            async with engine.begin() as conn:
                await conn.execute(
                    update(inbox)
                    .where(inbox.c.message_id == envelope.id)
                    .values(received_at=datetime.now(UTC) - timedelta(days=30))
                )
            policy = RetentionPolicy(
                inbox, "received_at", timedelta(seconds=stack.settings.inbox_retention_seconds)
            )
            assert await purge(engine, policy, service="payments-gateway") >= 1
            async with engine.connect() as conn:
                assert await conn.scalar(receipt) == 0

            await stack.orders_bus.publish(envelope)  # a parked copy redriven weeks later
            await wait_until(
                lambda: stack.received(envelope), timeout=20, what="the redelivery to be applied"
            )
        finally:
            await engine.dispose()
        # One payment per order (its unique order_id): the redelivery found it, charged nothing,
        # and announced the same outcome again.
        await stack.one_outcome(order, "payment.succeeded")
