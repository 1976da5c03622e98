"""Reading payments: the caller's own, newest first, keyset pages, validated input."""

from __future__ import annotations

import uuid

from tests.integration.stack import Stack, an_order


class TestPaymentsApi:
    async def test_a_users_payments_come_in_pages_newest_first(self, stack: Stack) -> None:
        user_id = uuid.uuid4()
        orders = [an_order(user_id=user_id) for _ in range(3)]
        for order in orders:
            await stack.publish(order)
            await stack.wait_for("payment.succeeded", order.order_id)
        headers = stack.auth(user_id)

        first = await stack.api.get("/payments", params={"limit": 2}, headers=headers)
        cursor = first.json()["next_cursor"]
        second = await stack.api.get(
            "/payments", params={"limit": 2, "cursor": cursor}, headers=headers
        )

        assert first.status_code == 200
        assert second.status_code == 200
        assert cursor is not None
        assert second.json()["next_cursor"] is None
        listed = [p["order_id"] for p in first.json()["items"] + second.json()["items"]]
        assert listed == [str(o.order_id) for o in reversed(orders)]

    async def test_an_admin_sees_any_payment_a_user_only_their_own(self, stack: Stack) -> None:
        order = an_order()
        await stack.publish(order)
        await stack.wait_for("payment.succeeded", order.order_id)
        admin = stack.auth(uuid.uuid4(), admin=True)

        as_admin = await stack.api.get(
            "/payments", params={"order_id": str(order.order_id)}, headers=admin
        )
        as_stranger = await stack.api.get("/payments", headers=stack.auth(uuid.uuid4()))

        assert [p["order_id"] for p in as_admin.json()["items"]] == [str(order.order_id)]
        assert as_stranger.json() == {"items": [], "next_cursor": None}

    async def test_a_payment_has_the_documented_fields(self, stack: Stack) -> None:
        order = an_order(amount="9.90")
        await stack.publish(order)
        [succeeded] = await stack.wait_for("payment.succeeded", order.order_id)

        response = await stack.api.get(
            f"/payments/{succeeded.payment_id}", headers=stack.auth(order.user_id)
        )

        assert response.status_code == 200
        assert set(response.json()) == {
            "id",
            "order_id",
            "status",
            "amount",
            "currency",
            "reason",
            "provider_reference",
            "created_at",
            "updated_at",
        }
        assert response.json()["amount"] == "9.90"

    async def test_reading_needs_a_valid_token(self, stack: Stack) -> None:
        listed = await stack.api.get("/payments")
        fetched = await stack.api.get(f"/payments/{uuid.uuid4()}")
        forged = await stack.api.get("/payments", headers={"Authorization": "Bearer nope"})

        for response in (listed, fetched, forged):
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_invalid_paging_input_is_422(self, stack: Stack) -> None:
        headers = stack.auth(uuid.uuid4())

        for params in (
            {"limit": 0},
            {"limit": 101},
            {"limit": "many"},
            {"cursor": "not-a-cursor"},
            {"order_id": "not-a-uuid"},
        ):
            response = await stack.api.get("/payments", params=params, headers=headers)
            assert response.status_code == 422, params
            assert response.json()["error"]["code"] in {"validation_error", "invalid_cursor"}

    async def test_an_unknown_payment_is_404_and_a_malformed_id_422(self, stack: Stack) -> None:
        headers = stack.auth(uuid.uuid4())

        unknown = await stack.api.get(f"/payments/{uuid.uuid4()}", headers=headers)
        malformed = await stack.api.get("/payments/12", headers=headers)

        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "payment_not_found"
        assert malformed.status_code == 422
