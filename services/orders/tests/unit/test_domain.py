"""The state machine table: exactly the transitions SYSTEM.md allows."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from orders_service.domain import TRANSITIONS, OrderStatus, can_transition, is_final
from orders_service.errors import InvalidStateTransition
from orders_service.models import Order
from orders_service.service import transition

ALLOWED = {
    (OrderStatus.PENDING, OrderStatus.CONFIRMED),
    (OrderStatus.PENDING, OrderStatus.FAILED),
    (OrderStatus.PENDING, OrderStatus.CANCELLED),
    (OrderStatus.CONFIRMED, OrderStatus.REFUND_PENDING),
    (OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED),
}


def an_order(status: OrderStatus) -> Order:
    return Order(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        status=status.value,
        currency="USD",
        total_amount=Decimal("1.00"),
    )


class TestTransitionTable:
    def test_every_status_has_an_entry(self) -> None:
        assert set(TRANSITIONS) == set(OrderStatus)

    @pytest.mark.parametrize(
        ("current", "target"), list(itertools.product(OrderStatus, OrderStatus))
    )
    def test_only_the_documented_transitions_are_allowed(
        self, current: OrderStatus, target: OrderStatus
    ) -> None:
        assert can_transition(current, target) is ((current, target) in ALLOWED)

    def test_failed_cancelled_and_refunded_are_final(self) -> None:
        assert {s for s in OrderStatus if is_final(s)} == {
            OrderStatus.FAILED,
            OrderStatus.CANCELLED,
            OrderStatus.REFUNDED,
        }


class TestTransition:
    def test_an_allowed_transition_changes_status_time_and_reason(self) -> None:
        order = an_order(OrderStatus.PENDING)
        before = datetime(2020, 1, 1, tzinfo=UTC)
        order.updated_at = before

        transition(order, OrderStatus.CANCELLED, reason="cancelled_by_user")

        assert order.status == "cancelled"
        assert order.status_reason == "cancelled_by_user"
        assert order.updated_at > before

    def test_a_refused_transition_raises_409_and_changes_nothing(self) -> None:
        order = an_order(OrderStatus.CANCELLED)

        with pytest.raises(InvalidStateTransition) as raised:
            transition(order, OrderStatus.CONFIRMED)

        assert raised.value.status_code == 409
        assert raised.value.code == "invalid_state_transition"
        assert order.status == "cancelled"
