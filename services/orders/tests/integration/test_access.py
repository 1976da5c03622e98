"""Object-level authorisation: another user's order does not exist as far as you can tell."""

from __future__ import annotations

import uuid

from tests.integration.support import Service


class TestOwnership:
    async def test_another_users_order_is_404_like_a_missing_one(self, orders: Service) -> None:
        owner, stranger = uuid.uuid4(), uuid.uuid4()
        order = await orders.place(owner)

        theirs = await orders.client.get(f"/orders/{order['id']}", headers=orders.auth(stranger))
        missing = await orders.client.get(f"/orders/{uuid.uuid4()}", headers=orders.auth(stranger))

        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
        assert theirs.json()["error"]["message"] == missing.json()["error"]["message"]

    async def test_another_user_cannot_cancel_it(self, orders: Service) -> None:
        owner, stranger = uuid.uuid4(), uuid.uuid4()
        order = await orders.place(owner)

        response = await orders.client.post(
            f"/orders/{order['id']}/cancel", headers=orders.auth(stranger)
        )

        assert response.status_code == 404
        assert (await orders.get(owner, order["id"]))["status"] == "pending"

    async def test_a_list_shows_only_the_callers_orders(self, orders: Service) -> None:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        mine = await orders.place(alice)
        await orders.place(bob)

        listing = await orders.client.get("/orders", headers=orders.auth(alice))

        assert [o["id"] for o in listing.json()["items"]] == [mine["id"]]

    async def test_an_admin_can_read_any_order(self, orders: Service) -> None:
        owner = uuid.uuid4()
        order = await orders.place(owner)

        response = await orders.client.get(
            f"/orders/{order['id']}", headers=orders.auth(uuid.uuid4(), admin=True)
        )

        assert response.status_code == 200
        assert response.json() == order

    async def test_a_malformed_order_id_is_422(self, orders: Service, user_id: uuid.UUID) -> None:
        response = await orders.client.get("/orders/not-a-uuid", headers=orders.auth(user_id))

        assert response.status_code == 422

    async def test_reading_needs_a_token(self, orders: Service) -> None:
        assert (await orders.client.get("/orders")).status_code == 401
        assert (await orders.client.get(f"/orders/{uuid.uuid4()}")).status_code == 401
        assert (await orders.client.post(f"/orders/{uuid.uuid4()}/cancel")).status_code == 401
