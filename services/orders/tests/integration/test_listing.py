"""GET /orders: the caller's orders, newest first, keyset pages, no N+1 queries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event

from tests.integration.support import Service, order_body

THREE_ITEMS = order_body(
    [
        {"sku": "A", "quantity": 1, "unit_price": "1.00"},
        {"sku": "B", "quantity": 2, "unit_price": "2.00"},
        {"sku": "C", "quantity": 3, "unit_price": "3.00"},
    ]
)


_statements: ContextVar[list[str] | None] = ContextVar("statements", default=None)


def _record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
    statements = _statements.get()
    if statements is not None:
        statements.append(statement)


@contextmanager
def counting_statements(orders: Service) -> Iterator[list[str]]:
    """Collect the SQL run for requests made inside the block.

    In-process requests run in this task's context, background work (the outbox relay, the
    consumers, the denylist) in their own, so only the requests' statements are counted.
    """
    statements: list[str] = []
    engine = orders.runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", _record)
    token = _statements.set(statements)
    try:
        yield statements
    finally:
        _statements.reset(token)
        event.remove(engine, "before_cursor_execute", _record)


async def walk(orders: Service, user_id: uuid.UUID, query: str) -> list[list[dict[str, Any]]]:
    """Follow next_cursor to the end; returns every page."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        url = f"/orders?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = await orders.client.get(url, headers=orders.auth(user_id))
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


class TestListOrders:
    async def test_next_cursor_walks_every_order_once_newest_first(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        placed = [(await orders.place(user_id))["id"] for _ in range(25)]

        pages = await walk(orders, user_id, "limit=10")

        assert [len(page) for page in pages] == [10, 10, 5]
        listed = [o["id"] for page in pages for o in page]
        assert listed == list(reversed(placed))

    async def test_the_default_page_is_20(self, orders: Service, user_id: uuid.UUID) -> None:
        for _ in range(21):
            await orders.place(user_id)

        response = await orders.client.get("/orders", headers=orders.auth(user_id))

        assert len(response.json()["items"]) == 20
        assert response.json()["next_cursor"]

    async def test_a_page_that_ends_exactly_has_no_next_cursor(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        for _ in range(3):
            await orders.place(user_id)

        response = await orders.client.get("/orders?limit=3", headers=orders.auth(user_id))

        assert len(response.json()["items"]) == 3
        assert response.json()["next_cursor"] is None

    async def test_the_status_filter_pages_through_matching_orders_only(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        placed = [(await orders.place(user_id))["id"] for _ in range(7)]
        cancelled = placed[::2]
        for order_id in cancelled:
            response = await orders.client.post(
                f"/orders/{order_id}/cancel", headers=orders.auth(user_id)
            )
            assert response.status_code == 200

        pages = await walk(orders, user_id, "status=cancelled&limit=2")
        pending = await walk(orders, user_id, "status=pending&limit=100")

        listed = [o["id"] for page in pages for o in page]
        assert listed == list(reversed(cancelled))
        assert {o["status"] for page in pages for o in page} == {"cancelled"}
        assert [o["id"] for o in pending[0]] == [i for i in reversed(placed) if i not in cancelled]

    async def test_items_come_with_each_order(self, orders: Service, user_id: uuid.UUID) -> None:
        placed = await orders.place(user_id, THREE_ITEMS)

        response = await orders.client.get("/orders", headers=orders.auth(user_id))

        assert response.json()["items"] == [placed]

    async def test_a_page_costs_the_same_statements_for_2_or_20_orders(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        for _ in range(20):
            await orders.place(user_id, THREE_ITEMS)

        with counting_statements(orders) as small:
            two = await orders.client.get("/orders?limit=2", headers=orders.auth(user_id))
        with counting_statements(orders) as large:
            twenty = await orders.client.get("/orders?limit=20", headers=orders.auth(user_id))

        assert len(two.json()["items"]) == 2
        assert len(twenty.json()["items"]) == 20
        assert all(len(o["items"]) == 3 for o in twenty.json()["items"])
        assert len(large) == len(small)
        assert 2 <= len(large) <= 3, large  # the orders, then all their items
        assert sum("FROM order_items" in statement for statement in large) == 1

    async def test_bad_queries_are_422(self, orders: Service, user_id: uuid.UUID) -> None:
        for query in (
            "limit=0",
            "limit=101",
            "limit=abc",
            "status=shipped",
            "cursor=not-a-cursor",
            "cursor=eyJ0IjogMX0",  # base64 of a JSON object without our fields
            "cursor=" + "A" * 300,
        ):
            response = await orders.client.get(f"/orders?{query}", headers=orders.auth(user_id))
            assert response.status_code == 422, query
            assert response.json()["error"]["code"] in {"validation_error", "invalid_cursor"}
