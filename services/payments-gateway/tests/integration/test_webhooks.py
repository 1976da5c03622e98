"""The provider's webhook settles pending charges; forged, stale and replayed ones are refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import orjson

from servicekit.events import OrderCreated
from servicekit.testing.waiting import wait_until
from svctools.simulator import sign_webhook
from tests.integration.stack import WEBHOOK_PATH, Stack, StackFactory, an_order


async def pending_payment(stack: Stack) -> tuple[OrderCreated, dict[str, Any]]:
    """An order whose charge the provider answered pending (its payment has the charge id)."""
    order = an_order(card="tok_pending")
    await stack.publish(order)

    async def charged() -> list[dict[str, Any]]:
        items = await stack.payments_of(order)
        return items if items and items[0]["provider_reference"] is not None else []

    [payment] = await wait_until(charged, timeout=10, what="the pending charge's id recorded")
    assert payment["status"] == "pending"
    return order, payment


def charge_event(order: OrderCreated, payment: dict[str, Any], *, kind: str = "succeeded") -> bytes:
    """A provider event about the payment's charge, as the simulator would send it."""
    return orjson.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": f"charge.{kind}",
            "created": int(time.time()),
            "data": {
                "charge_id": payment["provider_reference"],
                "status": kind,
                "amount": payment["amount"],
                "currency": payment["currency"],
                "idempotency_key": payment["id"],
                "metadata": {"order_id": str(order.order_id), "payment_id": payment["id"]},
            },
        }
    )


async def deliver(
    stack: Stack, body: bytes, *, signature: str | None = None, at: int | None = None
) -> httpx.Response:
    """POST a webhook signed with the shared secret (or with ``signature`` as given)."""
    secret = stack.settings.webhook_secret.get_secret_value()
    headers = {"Content-Type": "application/json"}
    if signature is None:
        signature = sign_webhook(secret, at if at is not None else int(time.time()), body)
    if signature:
        headers["Provider-Signature"] = signature
    return await stack.api.post(WEBHOOK_PATH, content=body, headers=headers)


class TestWebhookFromTheProvider:
    async def test_a_pending_charge_is_completed_by_the_providers_signed_webhook(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(pending_delay=1.0) as stack:
            order, pending = await pending_payment(stack)

            [succeeded] = await stack.wait_for("payment.succeeded", order.order_id)

            assert str(succeeded.payment_id) == pending["id"]
            assert succeeded.provider_reference == pending["provider_reference"]
            payment = await stack.payment_of(order)
            assert payment["status"] == "succeeded"
            [charge] = await stack.ledger(order.order_id)
            assert charge["status"] == "succeeded"

            async def delivered_once() -> bool:
                return (await stack.stats())["webhooks"]["delivered"] == 1

            await wait_until(delivered_once, timeout=5, what="the webhook delivered once")

    async def test_a_pending_charge_that_fails_later_fails_the_payment(self, stack: Stack) -> None:
        order = an_order(card="tok_pending_fail")

        await stack.publish(order)

        [failed] = await stack.wait_for("payment.failed", order.order_id)
        assert failed.reason == "declined"
        payment = await stack.payment_of(order)
        assert payment["status"] == "failed"
        assert payment["reason"] == "declined"


class TestWebhookChecks:
    async def test_a_signed_event_is_applied_once_and_its_replay_refused(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(webhooks=False) as stack:
            order, payment = await pending_payment(stack)
            body = charge_event(order, payment)

            first = await deliver(stack, body)
            replay = await deliver(stack, body)  # freshly signed, same event id

            assert first.status_code == 200, first.text
            assert first.json()["result"] == "applied"
            assert replay.status_code == 409
            assert replay.json()["error"]["code"] == "webhook_replayed"
            await stack.wait_for("payment.succeeded", order.order_id)
            await asyncio.sleep(0.5)
            assert len(await stack.published("payment.succeeded", order.order_id)) == 1
            assert (await stack.payment_of(order))["status"] == "succeeded"

    async def test_forged_signatures_are_refused_and_change_nothing(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(webhooks=False) as stack:
            order, payment = await pending_payment(stack)
            body = charge_event(order, payment)
            now = int(time.time())

            missing = await deliver(stack, body, signature="")
            wrong_secret = await deliver(
                stack, body, signature=sign_webhook("whsec_attacker", now, body)
            )
            tampered = await deliver(
                stack,
                body.replace(b'"succeeded"', b'"failed"'),
                signature=sign_webhook(stack.settings.webhook_secret.get_secret_value(), now, body),
            )
            garbage = await deliver(stack, body, signature="t=now,v1=nothing")

            for response in (missing, wrong_secret, tampered, garbage):
                assert response.status_code == 401, response.text
                assert response.json()["error"]["code"] == "invalid_signature"
            assert (await stack.payment_of(order))["status"] == "pending"

    async def test_a_stale_or_future_timestamp_is_refused(self, start_stack: StackFactory) -> None:
        async with start_stack(webhooks=False) as stack:
            order, payment = await pending_payment(stack)
            body = charge_event(order, payment)
            window = stack.settings.webhook_tolerance_seconds

            stale = await deliver(stack, body, at=int(time.time()) - window - 60)
            future = await deliver(stack, body, at=int(time.time()) + window + 60)

            for response in (stale, future):
                assert response.status_code == 400, response.text
                assert response.json()["error"]["code"] == "webhook_timestamp_out_of_tolerance"
            assert (await stack.payment_of(order))["status"] == "pending"
            # Refused deliveries were not recorded: the same event, signed now, still applies.
            assert (await deliver(stack, body)).status_code == 200

    async def test_an_event_for_an_unknown_payment_is_404(self, stack: Stack) -> None:
        ghost = an_order()
        payment = {
            "id": str(uuid.uuid4()),
            "provider_reference": f"ch_{uuid.uuid4().hex}",
            "amount": "21.00",
            "currency": "USD",
        }

        response = await deliver(stack, charge_event(ghost, payment))

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "payment_not_found"

    async def test_a_signed_body_of_the_wrong_shape_is_400(self, stack: Stack) -> None:
        response = await deliver(stack, b'{"id": "evt_1", "type": "charge.succeeded"}')

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_webhook"

    async def test_an_event_naming_another_charge_is_refused(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(webhooks=False) as stack:
            order, payment = await pending_payment(stack)
            forged = {**payment, "provider_reference": "ch_someone_else"}

            response = await deliver(stack, charge_event(order, forged))

            assert response.status_code == 409
            assert response.json()["error"]["code"] == "webhook_mismatch"
            assert (await stack.payment_of(order))["status"] == "pending"

    async def test_a_charge_reported_after_the_deadline_is_announced_for_a_refund(
        self, start_stack: StackFactory
    ) -> None:
        async with start_stack(webhooks=False, provider_deadline_seconds=1.0) as stack:
            await stack.faults(down=True)
            order = an_order()
            await stack.publish(order)
            await stack.wait_for("payment.failed", order.order_id)
            given_up = await stack.payment_of(order)
            assert given_up["reason"] == "provider_unavailable"
            late = {**given_up, "provider_reference": f"ch_{uuid.uuid4().hex}"}

            response = await deliver(stack, charge_event(order, late))

            assert response.status_code == 200, response.text
            [succeeded] = await stack.wait_for("payment.succeeded", order.order_id)
            assert succeeded.provider_reference == late["provider_reference"]
            payment = await stack.payment_of(order)
            assert payment["status"] == "succeeded"
            assert payment["reason"] is None
