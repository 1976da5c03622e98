"""Optimistic concurrency: of two changes made from the same read, exactly one lands."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from orders_service.domain import OrderStatus
from orders_service.errors import OrderConcurrentlyModified
from orders_service.repository import OrderRepository
from orders_service.service import save, transition
from servicekit.testing.capture import EventCapture
from tests.integration.support import Publish, Service, payment_succeeded


class TestOptimisticConcurrency:
    async def test_the_second_writer_from_a_stale_read_loses(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        placed = await orders.place(user_id)
        order_id = uuid.UUID(placed["id"])
        first, second = orders.runtime.sessions(), orders.runtime.sessions()
        try:
            await first.begin()
            await second.begin()
            mine = await OrderRepository(first).get(order_id)
            theirs = await OrderRepository(second).get(order_id)
            assert mine is not None
            assert theirs is not None
            transition(mine, OrderStatus.CANCELLED, reason="cancelled_by_user")
            transition(theirs, OrderStatus.CONFIRMED)

            await save(OrderRepository(first), mine)
            await first.commit()
            with pytest.raises(OrderConcurrentlyModified) as raised:
                await save(OrderRepository(second), theirs)
            await second.rollback()
        finally:
            await first.close()
            await second.close()

        assert raised.value.status_code == 409
        assert (await orders.get(user_id, placed["id"]))["status"] == "cancelled"

    async def test_a_writer_waiting_on_the_row_lock_loses_once_it_is_released(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        placed = await orders.place(user_id)
        order_id = uuid.UUID(placed["id"])
        first, second = orders.runtime.sessions(), orders.runtime.sessions()
        try:
            await first.begin()
            await second.begin()
            mine = await OrderRepository(first).get(order_id)
            theirs = await OrderRepository(second).get(order_id)
            assert mine is not None
            assert theirs is not None
            transition(mine, OrderStatus.CANCELLED)
            transition(theirs, OrderStatus.FAILED)
            await save(OrderRepository(first), mine)  # holds the row lock until commit

            blocked = asyncio.create_task(save(OrderRepository(second), theirs))
            await asyncio.sleep(0.2)
            assert not blocked.done()
            await first.commit()
            with pytest.raises(OrderConcurrentlyModified):
                await blocked
            await second.rollback()
        finally:
            await first.close()
            await second.close()

        assert (await orders.get(user_id, placed["id"]))["status"] == "cancelled"

    async def test_a_payment_racing_a_cancel_ends_in_one_consistent_state(
        self, orders: Service, publish: Publish, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        placed = await orders.place(user_id)
        payment = payment_succeeded(placed, user_id)

        _, cancel = await asyncio.gather(
            publish(payment),
            orders.client.post(f"/orders/{placed['id']}/cancel", headers=orders.auth(user_id)),
        )

        def ours(d: object) -> bool:
            return str(getattr(d, "order_id", "")) == placed["id"]

        if cancel.status_code == 200:
            # Cancel won: the payment that arrived for a cancelled order is given back.
            await published.wait_for("order.refund_requested", where=ours)
            assert (await orders.get(user_id, placed["id"]))["status"] == "cancelled"
            assert [d for _, d in await published.of_type("order.confirmed") if ours(d)] == []
        else:
            # Payment won: the cancel was refused, the order is paid.
            assert cancel.status_code == 409
            await published.wait_for("order.confirmed", where=ours)
            assert (await orders.get(user_id, placed["id"]))["status"] == "confirmed"
