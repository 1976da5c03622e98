"""The cluster drill's figures: completion times of the orders placed while nodes were down."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from svctools import chaos
from svctools.cluster_drill import measure


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(1_000_000 + seconds, UTC)


def placed(*orders: tuple[str, str]) -> chaos.LoadStats:
    stats = chaos.LoadStats()
    user = chaos.User("someone@example.com")
    stats.placed = [chaos.Placed(order_id, user, plan, "tok_visa") for order_id, plan in orders]
    return stats


class TestMeasure:
    def test_orders_placed_in_the_window_and_the_longest_pause_in_completions(self) -> None:
        stats = placed(("a", "keep"), ("b", "keep"), ("c", "keep"), ("d", "keep"))
        orders = {
            "a": (at(0), at(1), "confirmed"),  # before the fault
            "b": (at(10), at(11), "confirmed"),
            "c": (at(12), at(30), "confirmed"),  # waited for the cluster
            "d": (at(25), at(31), "failed"),  # placed after the nodes were back
        }

        gaps = measure("fault", (1_000_010, 1_000_020), (1_000_010, 1_000_040), stats, orders)

        assert sorted(gaps.latencies) == [1.0, 18.0]
        assert gaps.longest_pause == pytest.approx(19.0)  # from b's completion to c's
        assert "2 orders" in gaps.row()
        assert "max  18.00 s" in gaps.row()

    def test_cancelled_and_unfinished_orders_do_not_count(self) -> None:
        stats = placed(("a", "cancel-confirmed"), ("b", "keep"), ("c", "keep"))
        orders = {
            "a": (at(0), at(50), "refunded"),
            "b": (at(1), at(1), "pending"),
        }

        gaps = measure("fault", (1_000_000, 1_000_010), (1_000_000, 1_000_010), stats, orders)

        assert gaps.latencies == []
        assert "no orders" in gaps.row()
