"""Mass assignment: fields a client must not set, sent to every write endpoint.

Each is refused (422) or has no effect; the test checks the effect is absent either way.
"""

from __future__ import annotations

import uuid

import httpx

from servicekit.testing.forgery import claims_of
from servicekit.testing.waiting import wait_until_sync

from .helpers import PASSWORD, User, assert_error_envelope, new_email, place_order


def _refused_or_ok(response: httpx.Response, ok: int) -> bool:
    """True when the request was accepted, False when it was refused with a 422."""
    if response.status_code == 422:
        assert_error_envelope(response, 422)
        return False
    assert response.status_code == ok, response.text
    return True


class TestRegister:
    def test_roles_and_id_cannot_be_chosen(self, api: httpx.Client) -> None:
        email, chosen_id = new_email(), str(uuid.uuid4())
        response = api.post(
            "/auth/register",
            json={
                "email": email,
                "password": PASSWORD,
                "name": "Mallory",
                "roles": ["admin"],
                "id": chosen_id,
                "created_at": "2000-01-01T00:00:00Z",
            },
        )
        if not _refused_or_ok(response, 201):
            return
        created = response.json()
        assert created["id"] != chosen_id
        assert not created["created_at"].startswith("2000")
        login = api.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        claims = claims_of(login["access_token"])
        assert claims["sub"] == created["id"]
        assert "admin" not in claims["roles"]
        token = {"Authorization": f"Bearer {login['access_token']}"}
        wait_until_sync(lambda: api.get("/users/me", headers=token).status_code == 200)
        profile = api.get("/users/me", headers=token).json()
        assert profile["id"] == created["id"]
        assert "admin" not in profile["roles"]
        assert_error_envelope(api.get("/users", headers=token), 403)


class TestUpdateProfile:
    def test_email_roles_and_id_cannot_be_changed(self, api: httpx.Client, alice: User) -> None:
        before = api.get("/users/me", headers=alice.auth).json()
        for field, value in (
            ("email", "mallory@example.com"),
            ("roles", ["admin"]),
            ("id", str(uuid.uuid4())),
            ("created_at", "2000-01-01T00:00:00Z"),
        ):
            response = api.patch(
                "/users/me", json={"name": "Alice", field: value}, headers=alice.auth
            )
            _refused_or_ok(response, 200)
            after = api.get("/users/me", headers=alice.auth).json()
            assert (after["id"], after["email"], after["roles"], after["created_at"]) == (
                before["id"],
                before["email"],
                before["roles"],
                before["created_at"],
            ), field
        assert_error_envelope(api.get("/users", headers=alice.auth), 403)
        # The login email did not move either.
        login = api.post("/auth/login", json={"email": alice.email, "password": alice.password})
        assert login.status_code == 200


class TestPlaceOrder:
    def test_status_total_owner_and_id_are_the_servers(
        self, api: httpx.Client, alice: User, bob: User
    ) -> None:
        chosen_id = str(uuid.uuid4())
        for field, value in (
            ("status", "confirmed"),
            ("total_amount", "0.01"),
            ("user_id", bob.id),
            ("id", chosen_id),
            ("payment_id", str(uuid.uuid4())),
            ("created_at", "2000-01-01T00:00:00Z"),
        ):
            response = place_order(api, alice, token="tok_decline_sec", **{field: value})
            if not _refused_or_ok(response, 201):
                continue
            order = response.json()
            assert order["status"] == "pending", field
            assert order["total_amount"] == "21.00", field
            assert order["id"] != chosen_id, field
            assert api.get(f"/orders/{order['id']}", headers=alice.auth).status_code == 200
            assert api.get(f"/orders/{order['id']}", headers=bob.auth).status_code == 404

    def test_item_fields_are_the_servers(self, api: httpx.Client, alice: User) -> None:
        response = place_order(
            api,
            alice,
            token="tok_decline_sec",
            items=[{"sku": "SEC-1", "quantity": 2, "unit_price": "10.50", "line_total": "0.01"}],
        )
        if _refused_or_ok(response, 201):
            assert response.json()["items"][0]["line_total"] == "21.00"
