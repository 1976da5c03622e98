"""The order body: exact prices, bounded sizes, server-owned fields refused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from orders_service.schemas import OrderCreate, OrderItemRead


def body(unit_price: Any = "1.00", *, quantity: Any = 1, **extra: Any) -> dict[str, Any]:
    return {
        "items": [{"sku": "A-1", "quantity": quantity, "unit_price": unit_price}],
        "currency": "USD",
        "payment_token": "tok_visa",
        **extra,
    }


class TestUnitPrice:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("10.50", "10.50"),
            ("10.5", "10.50"),
            ("10", "10.00"),
            ("0.01", "0.01"),
            (10, "10.00"),
            (0.1, "0.10"),
            (19.99, "19.99"),
            ("99999999.99", "99999999.99"),
        ],
    )
    def test_prices_become_exact_two_place_decimals(self, given: Any, expected: str) -> None:
        order = OrderCreate.model_validate(body(given))

        assert order.items[0].unit_price == Decimal(expected)
        assert str(order.items[0].unit_price) == expected

    @pytest.mark.parametrize(
        "given",
        [
            "0",
            0,
            "0.00",
            "-1",
            -1,
            "1.001",
            1.001,
            "1e3",
            1e20,
            "NaN",
            "inf",
            " 1.00",
            "1,00",
            "",
            "100000000.00",
            True,
            None,
            [],
        ],
    )
    def test_anything_but_a_positive_two_place_amount_is_refused(self, given: Any) -> None:
        with pytest.raises(ValidationError):
            OrderCreate.model_validate(body(given))

    def test_json_numbers_are_read_as_written(self) -> None:
        order = OrderCreate.model_validate_json(
            '{"items": [{"sku": "A", "quantity": 3, "unit_price": 0.1}],'
            ' "currency": "USD", "payment_token": "t"}'
        )

        assert order.total_amount() == Decimal("0.30")


class TestOrderCreate:
    def test_the_total_is_the_exact_sum_of_the_lines(self) -> None:
        order = OrderCreate.model_validate(
            {
                "items": [
                    {"sku": "A", "quantity": 3, "unit_price": "0.10"},
                    {"sku": "B", "quantity": 3, "unit_price": "0.20"},
                    {"sku": "C", "quantity": 7, "unit_price": "19.99"},
                ],
                "currency": "EUR",
                "payment_token": "tok",
            }
        )

        assert order.total_amount() == Decimal("140.83")

    @pytest.mark.parametrize("quantity", [0, 1001, -1, "2", 1.5, True])
    def test_quantity_is_an_integer_from_1_to_1000(self, quantity: Any) -> None:
        with pytest.raises(ValidationError):
            OrderCreate.model_validate(body(quantity=quantity))

    @pytest.mark.parametrize("field", ["status", "total_amount", "user_id", "id"])
    def test_server_owned_fields_are_refused(self, field: str) -> None:
        with pytest.raises(ValidationError) as raised:
            OrderCreate.model_validate(body(**{field: "x"}))

        assert raised.value.errors()[0]["type"] == "extra_forbidden"

    @pytest.mark.parametrize("currency", ["usd", "XXX", "US", "USDD", 840, None])
    def test_unknown_currencies_are_refused(self, currency: Any) -> None:
        with pytest.raises(ValidationError):
            OrderCreate.model_validate({**body(), "currency": currency})

    def test_currencies_without_minor_units_take_whole_amounts(self) -> None:
        whole = OrderCreate.model_validate({**body("1500"), "currency": "JPY"})

        assert whole.total_amount() == Decimal("1500.00")
        with pytest.raises(ValidationError):
            OrderCreate.model_validate({**body("1500.50"), "currency": "JPY"})

    @pytest.mark.parametrize("count", [0, 101])
    def test_1_to_100_items(self, count: int) -> None:
        items = [{"sku": "A", "quantity": 1, "unit_price": "1.00"}] * count
        with pytest.raises(ValidationError):
            OrderCreate.model_validate({**body(), "items": items})

    def test_a_total_beyond_numeric_12_2_is_refused(self) -> None:
        items = [{"sku": "A", "quantity": 1000, "unit_price": "99999999.99"}] * 2
        with pytest.raises(ValidationError, match="may not exceed"):
            OrderCreate.model_validate({**body(), "items": items})

    @pytest.mark.parametrize("sku", ["", "A B", "ä", "S" * 65, "a/b"])
    def test_skus_are_short_plain_identifiers(self, sku: str) -> None:
        with pytest.raises(ValidationError):
            OrderCreate.model_validate(
                {**body(), "items": [{"sku": sku, "quantity": 1, "unit_price": "1"}]}
            )

    @pytest.mark.parametrize("token", ["", " ", "t" * 201, "tok visa"])
    def test_payment_tokens_are_1_to_200_visible_characters(self, token: str) -> None:
        with pytest.raises(ValidationError):
            OrderCreate.model_validate({**body(), "payment_token": token})


class TestOrderItemRead:
    def test_money_is_a_two_place_string_on_the_wire(self) -> None:
        item = OrderItemRead(sku="A", quantity=3, unit_price=Decimal("0.10"))

        assert item.model_dump(mode="json") == {
            "sku": "A",
            "quantity": 3,
            "unit_price": "0.10",
            "line_total": "0.30",
        }
