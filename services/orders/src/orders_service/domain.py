"""The order state machine: every status and the one table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    """Where an order is in its life."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUND_PENDING = "refund_pending"
    REFUNDED = "refunded"


# The only place that says which status may follow which; everything else asks it.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.CONFIRMED, OrderStatus.FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.CONFIRMED: frozenset({OrderStatus.REFUND_PENDING}),
    OrderStatus.REFUND_PENDING: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.FAILED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """Tell whether an order in ``current`` may move to ``target``."""
    return target in TRANSITIONS[current]


def is_final(status: OrderStatus) -> bool:
    """Tell whether no transition leaves ``status``."""
    return not TRANSITIONS[status]
