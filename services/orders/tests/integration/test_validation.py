"""What POST /orders refuses: nothing invalid is stored, and no input causes a 500."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.support import Service, order_body

ITEM = {"sku": "SKU-1", "quantity": 1, "unit_price": "1.00"}


def with_item(**changes: Any) -> dict[str, Any]:
    return order_body([{**ITEM, **changes}])


INVALID_BODIES = {
    "no items": order_body([]),
    "101 items": order_body([ITEM] * 101),
    "quantity 0": with_item(quantity=0),
    "quantity 1001": with_item(quantity=1001),
    "quantity as text": with_item(quantity="2"),
    "fractional quantity": with_item(quantity=1.5),
    "price 0": with_item(unit_price="0"),
    "price 0.00": with_item(unit_price="0.00"),
    "negative price": with_item(unit_price="-1"),
    "negative number price": with_item(unit_price=-1),
    "three decimal places": with_item(unit_price="1.001"),
    "three decimal places as a number": with_item(unit_price=1.001),
    "exponent": with_item(unit_price="1e3"),
    "not a number": with_item(unit_price="NaN"),
    "infinity": with_item(unit_price="Infinity"),
    "boolean price": with_item(unit_price=True),
    "price too large": with_item(unit_price="123456789.00"),
    "empty sku": with_item(sku=""),
    "sku with a space": with_item(sku="A B"),
    "sku too long": with_item(sku="S" * 65),
    "lower-case currency": order_body(currency="usd"),
    "unknown currency": order_body(currency="XXX"),
    "currency not a string": order_body(currency=840),
    "decimals in a currency without them": order_body(
        [{**ITEM, "unit_price": "100.50"}], currency="JPY"
    ),
    "total over the ledger's limit": order_body(
        [{**ITEM, "quantity": 1000, "unit_price": "99999999.99"}] * 2
    ),
    "empty payment token": order_body(payment_token=""),
    "payment token too long": order_body(payment_token="t" * 201),
    "client-chosen status": order_body(status="confirmed"),
    "client-chosen total": order_body(total_amount="0.01"),
    "client-chosen owner": order_body(user_id=str(uuid.uuid4())),
    "unknown item field": order_body([{**ITEM, "discount": "1.00"}]),
    "items not a list": order_body(items={"sku": "A"}),
    "body a list": [order_body()],
}


class TestValidation:
    @pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
    async def test_invalid_orders_are_422_and_store_nothing(
        self, orders: Service, user_id: uuid.UUID, body: Any
    ) -> None:
        response = await orders.client.post("/orders", json=body, headers=orders.auth(user_id))

        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "validation_error"
        listing = await orders.client.get("/orders", headers=orders.auth(user_id))
        assert listing.json()["items"] == []

    async def test_the_error_names_the_offending_field(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        response = await orders.client.post(
            "/orders", json=order_body(status="confirmed"), headers=orders.auth(user_id)
        )

        locations = [detail["loc"] for detail in response.json()["error"]["details"]]
        assert ["body", "status"] in locations

    async def test_malformed_json_is_400(self, orders: Service, user_id: uuid.UUID) -> None:
        response = await orders.client.post(
            "/orders",
            content=b'{"items": [',
            headers={**orders.auth(user_id), "Content-Type": "application/json"},
        )

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_body"

    async def test_without_a_token_it_is_401(self, orders: Service) -> None:
        response = await orders.client.post("/orders", json=order_body())

        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_a_forged_token_is_401(self, orders: Service) -> None:
        response = await orders.client.post(
            "/orders", json=order_body(), headers={"Authorization": "Bearer not.a.jwt"}
        )

        assert response.status_code == 401

    async def test_prices_as_numbers_and_short_strings_are_accepted(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        body = order_body(
            [
                {"sku": "A", "quantity": 1, "unit_price": 5},
                {"sku": "B", "quantity": 1, "unit_price": "0.5"},
                {"sku": "C", "quantity": 1000, "unit_price": 99999.99},
            ]
        )

        order = await orders.place(user_id, body)

        assert [i["unit_price"] for i in order["items"]] == ["5.00", "0.50", "99999.99"]
        assert order["total_amount"] == "99999995.50"

    async def test_100_items_are_accepted(self, orders: Service, user_id: uuid.UUID) -> None:
        order = await orders.place(user_id, order_body([ITEM] * 100))

        assert len(order["items"]) == 100
        assert order["total_amount"] == "100.00"
