"""The payments-gateway and the provider simulator, both served over real HTTP on free ports.

The simulator calls the service's webhook over HTTP, so the service runs in uvicorn too, not
only in-process.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select

from payments_gateway.config import Settings
from payments_gateway.models import inbox
from servicekit.bus import EventBus
from servicekit.db import create_engine
from servicekit.events import (
    EventData,
    EventEnvelope,
    OrderCreated,
    OrderItemData,
    OrderRefundRequested,
    new_envelope,
)
from servicekit.testing.capture import EventCapture
from servicekit.testing.tokens import TokenMinter
from servicekit.testing.waiting import wait_until

WEBHOOK_PATH = "/payments/webhooks/provider"


def an_order(
    *, user_id: uuid.UUID | None = None, card: str = "tok_visa", amount: str = "21.00"
) -> OrderCreated:
    """A fresh order as the orders service announces it."""
    total = Decimal(amount)
    return OrderCreated(
        order_id=uuid.uuid4(),
        user_id=user_id or uuid.uuid4(),
        items=[OrderItemData(sku="SKU-1", quantity=1, unit_price=total)],
        total_amount=total,
        currency="USD",
        payment_token=card,
    )


def a_refund_request(order: OrderCreated) -> OrderRefundRequested:
    """The orders service asking for an order's money back."""
    return OrderRefundRequested(
        order_id=order.order_id,
        user_id=order.user_id,
        amount=order.total_amount,
        currency=order.currency,
        reason="cancelled_after_payment",
    )


@dataclass
class Stack:
    """A running payments-gateway, its provider simulator, and the test's view of both."""

    settings: Settings
    api: httpx.AsyncClient
    provider: httpx.AsyncClient
    orders_bus: EventBus
    events: EventCapture
    tokens: TokenMinter

    async def publish(self, data: EventData) -> EventEnvelope:
        """Publish an event as the orders service would."""
        envelope = new_envelope(data, producer="orders")
        await self.orders_bus.publish(envelope)
        return envelope

    async def wait_for(
        self, event_type: str, order_id: uuid.UUID, *, count: int = 1, timeout: float = 10.0
    ) -> list[Any]:
        """The payloads of ``event_type`` published for an order (waits for ``count``)."""
        found = await self.events.wait_for(
            event_type,
            where=lambda d: getattr(d, "order_id", None) == order_id,
            count=count,
            timeout=timeout,
        )
        return [data for _, data in found]

    async def published(self, event_type: str, order_id: uuid.UUID) -> list[Any]:
        """Every ``event_type`` published so far for an order."""
        return [
            data
            for _, data in await self.events.of_type(event_type)
            if getattr(data, "order_id", None) == order_id
        ]

    async def ledger(self, order_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        """What the provider actually did (for one order: its charges and refunds)."""
        entries: list[dict[str, Any]] = (await self.provider.get("/__admin/ledger")).json()
        if order_id is None:
            return entries
        return [e for e in entries if e["metadata"].get("order_id") == str(order_id)]

    async def faults(self, **faults: Any) -> None:
        """Change the provider's injected faults."""
        response = await self.provider.put("/__admin/faults", json=faults)
        response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        """The provider's request counts."""
        stats: dict[str, Any] = (await self.provider.get("/__admin/stats")).json()
        return stats

    def auth(self, user_id: uuid.UUID, *, admin: bool = False) -> dict[str, str]:
        """An Authorization header for a user."""
        return self.tokens.headers(user_id, roles=["admin"] if admin else [])

    async def payments_of(self, order: OrderCreated) -> list[dict[str, Any]]:
        """The order's payments as its owner lists them."""
        response = await self.api.get(
            "/payments", params={"order_id": str(order.order_id)}, headers=self.auth(order.user_id)
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def received(self, *envelopes: EventEnvelope) -> bool:
        """Whether the service applied every one of ``envelopes`` (its inbox holds their ids)."""
        engine = create_engine(self.settings.database_url, pool_size=1, max_overflow=0)
        ids = {envelope.id for envelope in envelopes}
        try:
            async with engine.connect() as conn:
                count = await conn.scalar(
                    select(func.count()).select_from(inbox).where(inbox.c.message_id.in_(ids))
                )
        finally:
            await engine.dispose()
        return count == len(ids)

    async def one_outcome(self, order: OrderCreated, event_type: str) -> None:
        """One payment, one provider call, and whatever was announced is that one outcome.

        A repeated announcement of the order publishes its outcome again (the first may never
        have reached the order); the order applies a payment once.
        """
        [payment] = await self.payments_of(order)
        assert len(await self.ledger(order.order_id)) == 1
        announced = await self.published(event_type, order.order_id)
        assert announced, f"no {event_type} for {order.order_id}"
        assert {(a.payment_id, a.provider_reference) for a in announced} == {
            (uuid.UUID(payment["id"]), payment["provider_reference"])
        }, announced

    async def payment_of(self, order: OrderCreated) -> dict[str, Any]:
        """The order's one payment."""
        items = await self.payments_of(order)
        assert len(items) == 1, items
        return items[0]

    async def wait_for_status(
        self, order: OrderCreated, status: str, *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The order's payment once it reached ``status``."""

        async def reached() -> list[dict[str, Any]]:
            items = await self.payments_of(order)
            return items if items and items[0]["status"] == status else []

        [payment] = await wait_until(reached, timeout=timeout, what=f"the payment to be {status}")
        return payment


StackFactory = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]
