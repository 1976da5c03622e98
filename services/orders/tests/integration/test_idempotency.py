"""Idempotency-Key: a retried POST returns the first response and never places a second order."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from orders_service.models import IdempotencyRecord
from servicekit.testing.capture import EventCapture
from tests.integration.support import Service, of_user, order_body


def key() -> str:
    return f"key-{uuid.uuid4()}"


class TestIdempotencyKey:
    async def test_the_same_key_and_body_replay_the_first_response(
        self, orders: Service, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        headers = {**orders.auth(user_id), "Idempotency-Key": key()}

        first = await orders.client.post("/orders", json=order_body(), headers=headers)
        second = await orders.client.post("/orders", json=order_body(), headers=headers)

        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second.headers["idempotent-replayed"] == "true"
        listing = await orders.client.get("/orders", headers=orders.auth(user_id))
        assert [o["id"] for o in listing.json()["items"]] == [first.json()["id"]]
        await published.wait_for("order.created", where=of_user(user_id))
        await asyncio.sleep(0.3)
        created = [d for _, d in await published.of_type("order.created") if of_user(user_id)(d)]
        assert len(created) == 1

    async def test_an_equivalent_body_counts_as_the_same_request(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        headers = {**orders.auth(user_id), "Idempotency-Key": key()}
        as_text = order_body([{"sku": "A", "quantity": 1, "unit_price": "10.5"}])
        as_number = order_body([{"sku": "A", "quantity": 1, "unit_price": 10.50}])

        first = await orders.client.post("/orders", json=as_text, headers=headers)
        second = await orders.client.post("/orders", json=as_number, headers=headers)

        assert second.status_code == 201
        assert second.json()["id"] == first.json()["id"]

    async def test_the_replay_is_the_first_response_even_after_the_order_moved_on(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        headers = {**orders.auth(user_id), "Idempotency-Key": key()}
        first = await orders.client.post("/orders", json=order_body(), headers=headers)
        await orders.client.post(f"/orders/{first.json()['id']}/cancel", headers=headers)

        again = await orders.client.post("/orders", json=order_body(), headers=headers)

        assert again.json() == first.json()
        assert again.json()["status"] == "pending"

    async def test_the_same_key_with_another_body_is_409(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        headers = {**orders.auth(user_id), "Idempotency-Key": key()}
        await orders.client.post("/orders", json=order_body(), headers=headers)

        response = await orders.client.post(
            "/orders", json=order_body(currency="EUR"), headers=headers
        )

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        listing = await orders.client.get("/orders", headers=orders.auth(user_id))
        assert len(listing.json()["items"]) == 1

    async def test_keys_belong_to_one_user(self, orders: Service) -> None:
        shared_key = key()
        alice, bob = uuid.uuid4(), uuid.uuid4()

        for_alice = await orders.place(alice, order_body(), **{"Idempotency-Key": shared_key})
        for_bob = await orders.place(bob, order_body(), **{"Idempotency-Key": shared_key})

        assert for_alice["id"] != for_bob["id"]
        assert (await orders.get(bob, for_bob["id"]))["id"] == for_bob["id"]

    async def test_without_a_key_every_post_is_a_new_order(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        first = await orders.place(user_id)
        second = await orders.place(user_id)

        assert first["id"] != second["id"]

    async def test_ten_concurrent_requests_with_one_key_place_one_order(
        self, orders: Service, user_id: uuid.UUID, published: EventCapture
    ) -> None:
        headers = {**orders.auth(user_id), "Idempotency-Key": key()}

        responses = await asyncio.gather(
            *(orders.client.post("/orders", json=order_body(), headers=headers) for _ in range(10))
        )

        assert [r.status_code for r in responses] == [201] * 10
        assert len({r.json()["id"] for r in responses}) == 1
        assert len({r.text for r in responses}) == 1
        listing = await orders.client.get("/orders", headers=orders.auth(user_id))
        assert len(listing.json()["items"]) == 1
        await published.wait_for("order.created", where=of_user(user_id))
        await asyncio.sleep(0.3)
        created = [d for _, d in await published.of_type("order.created") if of_user(user_id)(d)]
        assert len(created) == 1

    async def test_an_oversized_key_is_422(self, orders: Service, user_id: uuid.UUID) -> None:
        response = await orders.client.post(
            "/orders",
            json=order_body(),
            headers={**orders.auth(user_id), "Idempotency-Key": "k" * 201},
        )

        assert response.status_code == 422


class TestIdempotencyRetention:
    async def test_expired_keys_are_forgotten_and_may_place_a_new_order(
        self, orders: Service, user_id: uuid.UUID
    ) -> None:
        reused = key()
        first = await orders.place(user_id, order_body(), **{"Idempotency-Key": reused})
        async with orders.runtime.sessions() as session, session.begin():
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.user_id == user_id)
                .values(created_at=datetime.now(UTC) - timedelta(hours=25))
            )

        purged = (await orders.runtime.retention_loop.run_once())["idempotency_keys"]
        again = await orders.place(user_id, order_body(), **{"Idempotency-Key": reused})

        assert purged >= 1
        assert again["id"] != first["id"]

    async def test_fresh_keys_are_kept(self, orders: Service, user_id: uuid.UUID) -> None:
        kept = key()
        first = await orders.place(user_id, order_body(), **{"Idempotency-Key": kept})

        await orders.runtime.retention_loop.run_once()
        again = await orders.place(user_id, order_body(), **{"Idempotency-Key": kept})

        assert again["id"] == first["id"]
