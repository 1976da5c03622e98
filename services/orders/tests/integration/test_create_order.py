"""Placing orders: the server computes the total in exact decimals and records order.created."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from servicekit.events import OrderCreated
from servicekit.testing.capture import EventCapture
from tests.integration.support import Service, of_order, order_body


class TestCreateOrder:
    async def test_a_new_order_is_pending_with_the_server_computed_total(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        body = order_body([{"sku": "BOOK-1", "quantity": 2, "unit_price": "10.50"}])

        response = await orders.client.post("/orders", json=body, headers=orders.auth(user_id))

        assert response.status_code == 201, response.text
        order = response.json()
        assert order["status"] == "pending"
        assert order["total_amount"] == "21.00"
        assert order["currency"] == "USD"
        assert order["items"] == [
            {"sku": "BOOK-1", "quantity": 2, "unit_price": "10.50", "line_total": "21.00"}
        ]
        uuid.UUID(order["id"])
        assert order["created_at"].endswith("Z")
        assert order["created_at"] == order["updated_at"]
        assert await orders.get(user_id, order["id"]) == order

    async def test_totals_are_exact_where_floats_would_drift(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        # As floats 0.1 * 3 is 0.30000000000000004 and 0.2 * 3 is 0.6000000000000001.
        body = order_body(
            [
                {"sku": "A", "quantity": 3, "unit_price": "0.10"},
                {"sku": "B", "quantity": 3, "unit_price": 0.2},
                {"sku": "C", "quantity": 1, "unit_price": "0.7"},
                {"sku": "D", "quantity": 3, "unit_price": "19.99"},
            ]
        )

        order = await orders.place(user_id, body)

        assert order["total_amount"] == "61.57"
        assert [i["line_total"] for i in order["items"]] == ["0.30", "0.60", "0.70", "59.97"]
        assert [i["unit_price"] for i in order["items"]] == ["0.10", "0.20", "0.70", "19.99"]

    async def test_order_created_is_published_once_with_the_order(
        self, orders: Service, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        order = await orders.place(user_id)

        [(envelope, data)] = await published.wait_for("order.created", where=of_order(order["id"]))

        assert isinstance(data, OrderCreated)
        assert envelope.producer == "orders"
        assert data.user_id == user_id
        assert data.total_amount == Decimal("24.25")
        assert envelope.data["total_amount"] == "24.25"
        assert data.currency == "USD"
        assert data.payment_token == "tok_visa"
        assert [(i.sku, i.quantity, i.unit_price) for i in data.items] == [
            ("BOOK-1", 2, Decimal("10.50")),
            ("PEN-2", 1, Decimal("3.25")),
        ]
        await asyncio.sleep(0.3)
        assert len([1 for _, d in await published.of_type("order.created")
                    if of_order(order["id"])(d)]) == 1  # fmt: skip

    async def test_the_event_carries_the_request_id_as_correlation_id(
        self, orders: Service, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        response = await orders.client.post(
            "/orders",
            json=order_body(),
            headers={**orders.auth(user_id), "X-Request-ID": "req-orders-corr-1"},
        )
        order_id = response.json()["id"]

        [(envelope, _)] = await published.wait_for("order.created", where=of_order(order_id))

        assert envelope.correlation_id == "req-orders-corr-1"
