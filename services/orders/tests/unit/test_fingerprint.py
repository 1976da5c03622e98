"""Idempotency fingerprints: equal for equivalent bodies, different for any real change."""

from __future__ import annotations

from typing import Any

from orders_service.schemas import OrderCreate
from orders_service.service import request_fingerprint


def order(**changes: Any) -> OrderCreate:
    base: dict[str, Any] = {
        "items": [{"sku": "A", "quantity": 2, "unit_price": "10.50"}],
        "currency": "USD",
        "payment_token": "tok_visa",
    }
    return OrderCreate.model_validate({**base, **changes})


class TestRequestFingerprint:
    def test_equivalent_prices_give_the_same_fingerprint(self) -> None:
        as_number = order(items=[{"sku": "A", "quantity": 2, "unit_price": 10.5}])

        assert request_fingerprint(as_number) == request_fingerprint(order())

    def test_any_change_gives_another_fingerprint(self) -> None:
        changed = [
            order(currency="EUR"),
            order(payment_token="tok_other"),
            order(items=[{"sku": "A", "quantity": 3, "unit_price": "10.50"}]),
            order(items=[{"sku": "B", "quantity": 2, "unit_price": "10.50"}]),
            order(items=[{"sku": "A", "quantity": 2, "unit_price": "10.51"}]),
        ]

        fingerprints = {request_fingerprint(o) for o in changed}

        assert len(fingerprints) == len(changed)
        assert request_fingerprint(order()) not in fingerprints
