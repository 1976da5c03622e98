"""Broken object-level authorisation: Bob reaching for Alice's resources, in every service.

Another user's resource answers exactly like one that does not exist (404, or an empty list),
and a write aimed at it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from servicekit.testing.waiting import wait_until_sync

from .helpers import User, assert_error_envelope, place_order


@dataclass
class AliceResources:
    order_id: str
    payment_id: str
    notification_id: str
    session_id: str


def _first_item(api: httpx.Client, path: str, user: User) -> dict[str, Any] | None:
    response = api.get(path, headers=user.auth)
    items = response.json().get("items") if response.status_code == 200 else None
    return items[0] if items else None


@pytest.fixture(scope="module")
def resources(api: httpx.Client, alice: User) -> AliceResources:
    placed = place_order(api, alice)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    payment = wait_until_sync(
        lambda: _first_item(api, f"/payments?order_id={order_id}", alice), timeout=15
    )
    assert payment, "no payment was made for Alice's order"
    confirmed = wait_until_sync(
        lambda: api.get(f"/orders/{order_id}", headers=alice.auth).json()["status"] == "confirmed",
        timeout=15,
    )
    assert confirmed, "Alice's order was not confirmed"
    notification = wait_until_sync(lambda: _first_item(api, "/notifications", alice), timeout=15)
    assert notification, "Alice got no notification"
    session = _first_item(api, "/auth/sessions", alice)
    assert session, "Alice has no session"
    return AliceResources(order_id, payment["id"], notification["id"], session["id"])


def _assert_not_found(response: httpx.Response) -> None:
    assert_error_envelope(response, 404)


class TestReadingAnotherUsersResource:
    def test_profile(self, api: httpx.Client, alice: User, bob: User) -> None:
        _assert_not_found(api.get(f"/users/{alice.id}", headers=bob.auth))
        assert api.get(f"/users/{alice.id}", headers=alice.auth).status_code == 200

    def test_profile_list_is_for_admins_only(self, api: httpx.Client, bob: User) -> None:
        assert_error_envelope(api.get("/users", headers=bob.auth), 403)

    def test_order(self, api: httpx.Client, resources: AliceResources, bob: User) -> None:
        _assert_not_found(api.get(f"/orders/{resources.order_id}", headers=bob.auth))

    def test_order_list(self, api: httpx.Client, resources: AliceResources, bob: User) -> None:
        listed = api.get("/orders", headers=bob.auth)
        assert listed.status_code == 200
        assert resources.order_id not in {o["id"] for o in listed.json()["items"]}

    def test_payment(self, api: httpx.Client, resources: AliceResources, bob: User) -> None:
        _assert_not_found(api.get(f"/payments/{resources.payment_id}", headers=bob.auth))

    def test_payments_of_an_order(
        self, api: httpx.Client, resources: AliceResources, bob: User
    ) -> None:
        listed = api.get(f"/payments?order_id={resources.order_id}", headers=bob.auth)
        assert listed.status_code == 200
        assert listed.json() == {"items": [], "next_cursor": None}
        everything = api.get("/payments", headers=bob.auth).json()["items"]
        assert resources.payment_id not in {p["id"] for p in everything}

    def test_notification(self, api: httpx.Client, resources: AliceResources, bob: User) -> None:
        _assert_not_found(api.get(f"/notifications/{resources.notification_id}", headers=bob.auth))
        listed = api.get("/notifications", headers=bob.auth).json()["items"]
        assert resources.notification_id not in {n["id"] for n in listed}
        assert all(n["recipient"] == bob.email for n in listed), listed

    def test_sessions(self, api: httpx.Client, resources: AliceResources, bob: User) -> None:
        listed = api.get("/auth/sessions", headers=bob.auth).json()["items"]
        assert resources.session_id not in {s["id"] for s in listed}


class TestWritingAnotherUsersResource:
    def test_cancelling_an_order(
        self, api: httpx.Client, resources: AliceResources, alice: User, bob: User
    ) -> None:
        _assert_not_found(api.post(f"/orders/{resources.order_id}/cancel", headers=bob.auth))
        order = api.get(f"/orders/{resources.order_id}", headers=alice.auth).json()
        assert order["status"] == "confirmed"

    def test_signing_out_a_session(
        self, api: httpx.Client, resources: AliceResources, alice: User, bob: User
    ) -> None:
        _assert_not_found(api.delete(f"/auth/sessions/{resources.session_id}", headers=bob.auth))
        listed = api.get("/auth/sessions", headers=alice.auth).json()["items"]
        assert resources.session_id in {s["id"] for s in listed}
        assert api.get("/users/me", headers=alice.auth).status_code == 200

    def test_logging_out_with_another_users_refresh_token(
        self, api: httpx.Client, alice: User, bob: User
    ) -> None:
        # Bob's logout with Alice's refresh token ends Bob's access token, not Alice's session.
        throwaway = api.post("/auth/login", json={"email": bob.email, "password": bob.password})
        bob_token = {"Authorization": f"Bearer {throwaway.json()['access_token']}"}
        response = api.post(
            "/auth/logout", json={"refresh_token": alice.refresh_token}, headers=bob_token
        )
        assert response.status_code == 204
        refreshed = api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
        assert refreshed.status_code == 200, refreshed.text
        alice.refresh_token = refreshed.json()["refresh_token"]
        alice.access_token = refreshed.json()["access_token"]
