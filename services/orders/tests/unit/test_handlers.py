"""Events whose order is not stored yet wait with growing delays, then fail loudly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from orders_service.errors import OrderNotYetKnown
from orders_service.handlers import MAX_DEFERRAL_SECONDS, wait_for_order
from servicekit.bus import ReceivedEvent, RetryLater
from servicekit.events import PaymentSucceeded, new_envelope


def received(*, age: timedelta, deferrals: int) -> ReceivedEvent:
    data = PaymentSucceeded(
        payment_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        amount=Decimal("1.00"),
        currency="USD",
        provider_reference="ch_1",
    )
    envelope = new_envelope(data, producer="payments-gateway", occurred_at=datetime.now(UTC) - age)
    return ReceivedEvent(
        envelope=envelope,
        data=data,
        attempt=1,
        deferrals=deferrals,
        routing_key=envelope.type,
    )


class TestWaitForOrder:
    @pytest.mark.parametrize(
        ("deferrals", "delay"), [(0, 0.5), (1, 1.0), (3, 4.0), (20, MAX_DEFERRAL_SECONDS)]
    )
    def test_a_young_event_is_deferred_with_growing_delays(
        self, deferrals: int, delay: float
    ) -> None:
        error = OrderNotYetKnown("order x is not stored (yet)")

        with pytest.raises(RetryLater) as raised:
            wait_for_order(received(age=timedelta(seconds=1), deferrals=deferrals), error,
                           timedelta(minutes=10))  # fmt: skip

        assert raised.value.delay == delay
        assert "not stored" in raised.value.reason

    def test_after_the_deadline_it_fails_like_any_error(self) -> None:
        error = OrderNotYetKnown("order x is not stored (yet)")

        with pytest.raises(OrderNotYetKnown):
            wait_for_order(
                received(age=timedelta(minutes=11), deferrals=30), error, timedelta(minutes=10)
            )
