"""Housekeeping of pending charges and webhooks: lookups when a webhook never comes, and
the retention of applied webhook ids."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from payments_gateway.main import retention
from payments_gateway.models import ProviderWebhookEvent
from servicekit.db import create_engine, session_factory
from servicekit.retention import purge
from tests.integration.stack import Stack, StackFactory, an_order
from tests.integration.test_webhooks import charge_event, deliver, pending_payment

# The provider settles its pending charges after 0.5 s; its webhook is switched off here.
QUICK = {"reconcile_after_seconds": 1.0, "reconcile_interval_seconds": 0.2}


async def charges_for(stack: Stack, order_id: object) -> list[dict[str, Any]]:
    ledger = (await stack.provider.get("/__admin/ledger")).json()
    return [
        entry
        for entry in ledger
        if entry["type"] == "charge" and entry["metadata"].get("order_id") == str(order_id)
    ]


class TestReconciliation:
    async def test_a_charge_settled_without_a_webhook_succeeds_once(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(webhooks=False, **QUICK) as stack:
            order, payment = await pending_payment(stack)

            [succeeded] = await stack.wait_for("payment.succeeded", order.order_id)
            await asyncio.sleep(1.0)  # several more rounds: nothing more happens

            assert str(succeeded.payment_id) == payment["id"]
            assert succeeded.provider_reference == payment["provider_reference"]
            assert len(await stack.published("payment.succeeded", order.order_id)) == 1
            assert (await stack.payment_of(order))["status"] == "succeeded"
            assert len(await charges_for(stack, order.order_id)) == 1

    async def test_a_charge_that_failed_at_the_provider_fails_the_payment(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(webhooks=False, **QUICK) as stack:
            order = an_order(card="tok_pending_fail")
            await stack.publish(order)

            [failed] = await stack.wait_for("payment.failed", order.order_id)

            assert failed.reason == "declined"
            assert (await stack.payment_of(order))["status"] == "failed"

    async def test_a_pending_charge_is_not_looked_up_before_its_webhook_had_time(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(
            webhooks=False, reconcile_after_seconds=60, reconcile_interval_seconds=0.2
        ) as stack:
            order, _ = await pending_payment(stack)
            await asyncio.sleep(1.5)  # the provider settled it at 0.5 s; no webhook came

            assert (await stack.payment_of(order))["status"] == "pending"
            assert await stack.published("payment.succeeded", order.order_id) == []

    async def test_a_webhook_and_the_lookup_settle_it_once_between_them(
        self, start_stack: StackFactory
    ) -> None:
        # Webhooks on and the lookup due as soon as the provider settles: both race.
        async with start_stack(
            reconcile_after_seconds=0.4, reconcile_interval_seconds=0.05
        ) as stack:
            orders = [an_order(card="tok_pending") for _ in range(10)]
            for order in orders:
                await stack.publish(order)
            for order in orders:
                await stack.wait_for("payment.succeeded", order.order_id)
            await asyncio.sleep(1.0)

            for order in orders:
                assert len(await stack.published("payment.succeeded", order.order_id)) == 1
                assert len(await charges_for(stack, order.order_id)) == 1


class TestWebhookRetention:
    async def test_applied_ids_past_their_retention_are_deleted_and_recent_ones_kept(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(webhooks=False) as stack:
            old_order, old_payment = await pending_payment(stack)
            new_order, new_payment = await pending_payment(stack)
            for order, payment in ((old_order, old_payment), (new_order, new_payment)):
                response = await deliver(stack, charge_event(order, payment))
                assert response.status_code == 200, response.text
            engine = create_engine(stack.settings.database_url, pool_size=1, max_overflow=0)
            sessions = session_factory(engine)
            try:
                async with sessions() as session, session.begin():
                    await session.execute(
                        update(ProviderWebhookEvent)
                        .where(ProviderWebhookEvent.payment_id == uuid.UUID(old_payment["id"]))
                        .values(received_at=datetime.now(UTC) - timedelta(days=8))
                    )

                [webhook_ids] = retention(stack.settings)
                purged = await purge(engine, webhook_ids, service="payments-gateway")

                async with sessions() as session:
                    kept = list(await session.scalars(select(ProviderWebhookEvent.payment_id)))
            finally:
                await engine.dispose()

            assert purged == 1
            assert uuid.UUID(old_payment["id"]) not in kept
            assert uuid.UUID(new_payment["id"]) in kept
