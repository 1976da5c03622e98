"""Orders left waiting on payments-gateway are moved on: pending ones are announced again,
refund_pending ones have their refund asked for again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from orders_service.config import Settings
from orders_service.main import create_app
from servicekit.testing.capture import EventCapture
from servicekit.testing.plugin import Infra, serve_app
from servicekit.testing.tokens import TokenMinter
from tests.integration.support import Publish, Service, confirm, of_order, routable

# A bound a loaded machine keeps easily: stalled after 1 s, swept every 0.2 s, checked at 20 s.
QUICK = {
    "pending_reannounce_seconds": 1.0,
    "refund_rerequest_seconds": 1.0,
    "in_flight_sweep_seconds": 0.2,
}


@pytest.fixture
async def sweeping(
    settings: Settings, token_minter: TokenMinter, infra: Infra
) -> AsyncIterator[Service]:
    """The orders service with its in-flight sweeper on short bounds."""
    app = create_app(settings.model_copy(update=QUICK))
    async with serve_app(app) as client, routable(infra.amqp_url, settings.events_exchange):
        yield Service(app=app, client=client, minter=token_minter)


class TestInFlightSweeper:
    async def test_a_pending_order_nobody_acted_on_is_announced_again(
        self, sweeping: Service, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await sweeping.place(user_id)

        found = await published.wait_for(
            "order.created", where=of_order(order["id"]), count=2, timeout=20
        )

        first, again = found[0][0], found[1][0]
        assert again.id != first.id  # a new event: it reaches a handler that applied the first
        assert again.data == first.data
        assert (await sweeping.get(user_id, order["id"]))["status"] == "pending"

    async def test_a_refund_that_never_completes_is_requested_again_until_refunded(
        self,
        sweeping: Service,
        publish: Publish,
        user_id: uuid.UUID,
        published: EventCapture,
    ) -> None:
        order = await sweeping.place(user_id)
        payment_id = await confirm(sweeping, publish, order, user_id)
        cancelled = await sweeping.client.post(
            f"/orders/{order['id']}/cancel", headers=sweeping.auth(user_id)
        )
        assert cancelled.json()["status"] == "refund_pending"

        requests = await published.wait_for(
            "order.refund_requested", where=of_order(order["id"]), count=2, timeout=20
        )

        assert {data.payment_id for _, data in requests} == {payment_id}  # type: ignore[attr-defined]
        assert requests[0][0].id != requests[1][0].id
        assert (await sweeping.get(user_id, order["id"]))["status"] == "refund_pending"
