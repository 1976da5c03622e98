"""GET /notifications and GET /notifications/{id}: own only, keyset pages, errors."""

from __future__ import annotations

import uuid

from servicekit.testing.waiting import wait_until

from .support import Shop


async def user_with_notifications(shop: Shop, orders: int) -> tuple[uuid.UUID, list[str]]:
    """A registered user with ``orders`` confirmed orders; their notification ids, newest first."""
    user_id, email = await shop.register()
    await shop.wait_for_mail(email, "Welcome")
    for _ in range(orders):
        await shop.confirm_order(user_id)

    async def all_recorded() -> list[dict[str, object]] | None:
        items = await shop.notifications(user_id)
        return items if len(items) == orders + 1 else None

    items = await wait_until(all_recorded, what="every notification to be recorded")
    return user_id, [str(item["id"]) for item in items]


class TestOwnership:
    async def test_another_users_notification_is_404_and_not_listed(self, shop: Shop) -> None:
        owner, [notification_id] = await user_with_notifications(shop, orders=0)
        stranger = uuid.uuid4()

        response = await shop.client.get(
            f"/notifications/{notification_id}", headers=shop.headers(stranger)
        )
        listing = await shop.client.get("/notifications", headers=shop.headers(stranger))
        own = await shop.client.get(
            f"/notifications/{notification_id}", headers=shop.headers(owner)
        )

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "notification_not_found"
        assert listing.status_code == 200
        assert listing.json() == {"items": [], "next_cursor": None}
        assert own.status_code == 200
        assert own.json()["id"] == notification_id

    async def test_an_unknown_id_is_404(self, shop: Shop) -> None:
        response = await shop.client.get(
            f"/notifications/{uuid.uuid4()}", headers=shop.headers(uuid.uuid4())
        )
        assert response.status_code == 404

    async def test_without_a_token_it_is_401_with_a_bearer_challenge(self, shop: Shop) -> None:
        listing = await shop.client.get("/notifications")
        one = await shop.client.get(f"/notifications/{uuid.uuid4()}")
        assert listing.status_code == one.status_code == 401
        assert listing.headers["www-authenticate"].startswith("Bearer")


class TestListing:
    async def test_pages_run_newest_first_without_gaps_or_repeats(self, shop: Shop) -> None:
        user_id, newest_first = await user_with_notifications(shop, orders=4)
        headers = shop.headers(user_id)

        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            response = await shop.client.get("/notifications", params=params, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            seen += [item["id"] for item in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break

        assert seen == newest_first
        assert pages == 3
        created = [item["created_at"] for item in (await shop.notifications(user_id))]
        assert created == sorted(created, reverse=True)

    async def test_the_default_page_is_20(self, shop: Shop) -> None:
        user_id, _ = await user_with_notifications(shop, orders=0)
        response = await shop.client.get("/notifications", headers=shop.headers(user_id))
        assert response.status_code == 200
        assert len(response.json()["items"]) == 1
        assert response.json()["next_cursor"] is None

    async def test_a_limit_outside_1_to_100_is_422(self, shop: Shop) -> None:
        headers = shop.headers(uuid.uuid4())
        for limit in ["0", "101", "-1", "ten"]:
            response = await shop.client.get(
                "/notifications", params={"limit": limit}, headers=headers
            )
            assert response.status_code == 422, limit
            assert response.json()["error"]["code"] == "validation_error"
        for limit in ["1", "100"]:
            response = await shop.client.get(
                "/notifications", params={"limit": limit}, headers=headers
            )
            assert response.status_code == 200, limit

    async def test_a_malformed_cursor_is_422(self, shop: Shop) -> None:
        headers = shop.headers(uuid.uuid4())
        # Not base64; base64 of `[]`, of `{"a":1}`, of `["x","y"]`; non-ASCII; too long.
        for cursor in ["garbage!", "!!!", "W10", "eyJhIjoxfQ", "WyJ4IiwieSJd", "é" * 10, "A" * 600]:
            response = await shop.client.get(
                "/notifications", params={"cursor": cursor}, headers=headers
            )
            assert response.status_code == 422, cursor
            assert response.json()["error"]["code"] in {"invalid_cursor", "validation_error"}

    async def test_a_malformed_id_is_422_not_500(self, shop: Shop) -> None:
        response = await shop.client.get(
            "/notifications/not-a-uuid", headers=shop.headers(uuid.uuid4())
        )
        assert response.status_code == 422
