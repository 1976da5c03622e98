"""Helpers of the orders integration tests: request bodies, the running service, event matchers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aio_pika
import httpx
from fastapi import FastAPI

from servicekit.events import EventData, PaymentSucceeded
from servicekit.runtime import ServiceRuntime
from servicekit.testing.tokens import TokenMinter
from servicekit.testing.waiting import wait_until


def order_body(items: Any = None, *, currency: Any = "USD", **extra: Any) -> dict[str, Any]:
    """A valid ``POST /orders`` body (two lines unless told otherwise)."""
    return {
        "items": items
        if items is not None
        else [
            {"sku": "BOOK-1", "quantity": 2, "unit_price": "10.50"},
            {"sku": "PEN-2", "quantity": 1, "unit_price": "3.25"},
        ],
        "currency": currency,
        "payment_token": "tok_visa",
        **extra,
    }


@dataclass
class Service:
    """The running orders service, its HTTP client and a way to act as a given user."""

    app: FastAPI
    client: httpx.AsyncClient
    minter: TokenMinter

    @property
    def runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.app.state.runtime
        return runtime

    def auth(self, user_id: uuid.UUID, *, admin: bool = False) -> dict[str, str]:
        """The Authorization header of a user (an admin if told)."""
        return self.minter.headers(user_id, roles=["admin"] if admin else [])

    async def place(
        self, user_id: uuid.UUID, body: dict[str, Any] | None = None, **headers: str
    ) -> dict[str, Any]:
        """Place an order as ``user_id`` and return it (asserts 201)."""
        response = await self.client.post(
            "/orders", json=body or order_body(), headers={**self.auth(user_id), **headers}
        )
        assert response.status_code == 201, response.text
        order: dict[str, Any] = response.json()
        return order

    async def get(self, user_id: uuid.UUID, order_id: str) -> dict[str, Any]:
        """Read an order as its owner (asserts 200)."""
        response = await self.client.get(f"/orders/{order_id}", headers=self.auth(user_id))
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        return order

    async def wait_for_status(
        self, user_id: uuid.UUID, order_id: str, status: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Poll the order until it has ``status`` (asserts it gets there in time)."""

        async def reached() -> dict[str, Any] | None:
            order = await self.get(user_id, order_id)
            return order if order["status"] == status else None

        return await wait_until(reached, timeout=timeout, what=f"order {order_id} to be {status}")


@contextlib.asynccontextmanager
async def routable(amqp_url: str, exchange: str) -> AsyncIterator[None]:
    """Bind a queue that drops what it gets, standing in for the consumers of ``order.*``.

    Payments and notifications consume these events in the running system; without any queue
    the broker returns them as unroutable and the outbox keeps retrying them.
    """
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        topic = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        sink = await channel.declare_queue(exclusive=True, arguments={"x-max-length": 0})
        await sink.bind(topic, routing_key="order.#")
        yield


def of_order(order_id: str | uuid.UUID) -> Callable[[EventData], bool]:
    """Match events about one order."""
    return lambda data: str(getattr(data, "order_id", "")) == str(order_id)


def of_user(user_id: uuid.UUID) -> Callable[[EventData], bool]:
    """Match events about one user."""
    return lambda data: getattr(data, "user_id", None) == user_id


Publish = Callable[[EventData], Awaitable[uuid.UUID]]


def payment_succeeded(
    order: dict[str, Any], user_id: uuid.UUID, *, payment_id: uuid.UUID | None = None
) -> PaymentSucceeded:
    """The ``payment.succeeded`` payments-gateway would publish for an order."""
    return PaymentSucceeded(
        payment_id=payment_id or uuid.uuid4(),
        order_id=uuid.UUID(order["id"]),
        user_id=user_id,
        amount=Decimal(order["total_amount"]),
        currency=order["currency"],
        provider_reference=f"ch_{uuid.uuid4().hex[:12]}",
    )


async def confirm(
    orders: Service, publish: Publish, order: dict[str, Any], user_id: uuid.UUID
) -> uuid.UUID:
    """Pay an order through the broker and wait until it is confirmed; returns the payment id."""
    payment = payment_succeeded(order, user_id)
    await publish(payment)
    await orders.wait_for_status(user_id, order["id"], "confirmed")
    return payment.payment_id
