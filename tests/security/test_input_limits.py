"""Hostile input on every list and write endpoint: answered with a 4xx, never a 5xx.

Huge or nonsensical page sizes, forged cursors, JSON nested ten thousand deep, broken JSON,
NUL characters (PostgreSQL text cannot store them), the wrong content type.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from servicekit.testing.forgery import Forger
from svctools.launcher import DEV_WEBHOOK_SECRET

from .helpers import WEBHOOK_SIGNATURE_HEADER, User, assert_error_envelope, sign_webhook

LISTS = ["/orders", "/payments", "/notifications", "/auth/sessions", "/users"]
LIMITS = ["1000", str(10**9), "-1", "abc", "0", "101", "1.5", "", str(10**40)]
CURSORS = [
    "garbage",
    "!!!",
    "x" * 5000,
    base64.urlsafe_b64encode(b"\x00\x00\x00").decode(),
    base64.urlsafe_b64encode(b"[" * 3000).decode(),
    base64.urlsafe_b64encode(json.dumps({"t": "not a time", "id": "not an id"}).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00\u0000", "\u0000"]).encode()).decode(),
    # A valid time and a number for the id: the decoders once let UUID(7)'s AttributeError out.
    base64.urlsafe_b64encode(json.dumps({"t": "2026-01-01T00:00:00+00:00", "id": 7}).encode())
    .decode()
    .rstrip("="),
    base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", 7]).encode()).decode(),
    base64.urlsafe_b64encode(
        json.dumps({"c": "2026-01-01T00:00:00+00:00", "i": 7}).encode()
    ).decode(),
]


@dataclass(frozen=True)
class Write:
    method: str
    path: str
    authenticated: bool = True


WRITES = [
    Write("POST", "/auth/register", authenticated=False),
    Write("POST", "/auth/login", authenticated=False),
    Write("POST", "/auth/refresh", authenticated=False),
    Write("POST", "/auth/logout"),
    Write("PATCH", "/users/me"),
    Write("POST", "/orders"),
    Write("POST", f"/orders/{uuid.UUID(int=1)}/cancel"),
    Write("POST", "/payments/webhooks/provider", authenticated=False),
]
IDS = [f"{w.method} {w.path}" for w in WRITES]

NESTING = 10_000
HOSTILE_BODIES = {
    "deep_array": b"[" * NESTING + b"]" * NESTING,
    "deep_object": b'{"a":' * NESTING + b"1" + b"}" * NESTING,
    "deep_inside_a_field": b'{"name": ' + b"[" * NESTING + b"]" * NESTING + b"}",
    "truncated": b'{"email": "a@example.com", "password": ',
    "nul_byte": b"\x00",
    "invalid_utf8": b'{"name": "\xff\xfe"}',
    "single_quotes": b"{'name': 'x'}",
    "nan_and_infinity": b'{"quantity": NaN, "unit_price": Infinity, "name": -Infinity}',
    "huge_number": b'{"quantity": 1' + b"0" * 5000 + b"}",
    "top_level_string": b'"name"',
    "top_level_null": b"null",
    "empty": b"",
}
# Text fields that are stored or looked up, each with a NUL in it (passwords are only hashed).
NUL_FIELDS: dict[str, dict[str, object]] = {
    "/auth/register": {"email": "a\u0000b@example.com", "name": "A\u0000B"},
    "/auth/login": {"email": "a\u0000b@example.com"},
    "/auth/refresh": {"refresh_token": "a\u0000b"},
    "/users/me": {"name": "A\u0000B", "bio": "b\u0000"},
    "/orders": {
        "items": [{"sku": "A\u0000", "quantity": 1, "unit_price": "1.00"}],
        "payment_token": "tok_\u0000",
    },
}


@pytest.fixture(scope="module")
def admin(forger: Forger, alice: User) -> dict[str, str]:
    """Alice's token with the admin role, to reach the admin-only list."""
    return {"Authorization": f"Bearer {forger.valid(alice.id, roles=['user', 'admin'])}"}


@pytest.fixture(scope="module")
def throwaway(api: httpx.Client, bob: User) -> dict[str, str]:
    """A token of Bob's own session, for logout requests that may end it."""
    login = api.post("/auth/login", json={"email": bob.email, "password": bob.password})
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _assert_4xx(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert_error_envelope(response, response.status_code)


def _headers(write: Write, user: User, content_type: str | None) -> dict[str, str]:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    if write.authenticated:
        headers.update(user.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


class TestListParameters:
    @pytest.mark.parametrize("limit", LIMITS)
    @pytest.mark.parametrize("path", LISTS)
    def test_a_limit_outside_1_to_100_is_422(
        self, api: httpx.Client, alice: User, admin: dict[str, str], path: str, limit: str
    ) -> None:
        headers = admin if path == "/users" else alice.auth
        response = api.get(path, params={"limit": limit}, headers=headers)
        assert_error_envelope(response, 422)

    @pytest.mark.parametrize("path", LISTS)
    def test_limits_1_and_100_are_fine(
        self, api: httpx.Client, alice: User, admin: dict[str, str], path: str
    ) -> None:
        headers = admin if path == "/users" else alice.auth
        for limit in ("1", "100"):
            response = api.get(path, params={"limit": limit}, headers=headers)
            assert response.status_code == 200, response.text
            assert len(response.json()["items"]) <= int(limit)

    @pytest.mark.parametrize("path", LISTS)
    def test_a_forged_cursor_is_422(
        self, api: httpx.Client, alice: User, admin: dict[str, str], path: str
    ) -> None:
        headers = admin if path == "/users" else alice.auth
        for cursor in CURSORS:
            response = api.get(path, params={"cursor": cursor}, headers=headers)
            assert_error_envelope(response, 422)


class TestBodies:
    @pytest.mark.parametrize("body", list(HOSTILE_BODIES))
    @pytest.mark.parametrize("write", WRITES, ids=IDS)
    def test_a_hostile_json_body_is_4xx(
        self, api: httpx.Client, throwaway: dict[str, str], bob: User, write: Write, body: str
    ) -> None:
        headers = _headers(write, bob, "application/json")
        if write.path == "/auth/logout":
            headers.update(throwaway)
        response = api.request(
            write.method, write.path, content=HOSTILE_BODIES[body], headers=headers
        )
        _assert_4xx(response)

    @pytest.mark.parametrize("body", list(HOSTILE_BODIES))
    def test_a_hostile_body_with_a_valid_webhook_signature_is_400(
        self, api: httpx.Client, body: str
    ) -> None:
        raw = HOSTILE_BODIES[body]
        signature = sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()), raw)
        response = api.post(
            "/payments/webhooks/provider",
            content=raw,
            headers={"Content-Type": "application/json", WEBHOOK_SIGNATURE_HEADER: signature},
        )
        assert_error_envelope(response, 400)

    def test_nul_characters_in_a_signed_webhook_are_400(self, api: httpx.Client) -> None:
        event = {
            "id": "evt_\u0000",
            "type": "charge.succeeded",
            "data": {"charge_id": "ch_\u0000", "status": "succeeded", "metadata": {"k": "\u0000"}},
        }
        raw = json.dumps(event).encode()
        signature = sign_webhook(DEV_WEBHOOK_SECRET, int(time.time()), raw)
        response = api.post(
            "/payments/webhooks/provider",
            content=raw,
            headers={"Content-Type": "application/json", WEBHOOK_SIGNATURE_HEADER: signature},
        )
        assert_error_envelope(response, 400)

    @pytest.mark.parametrize("path", list(NUL_FIELDS))
    def test_nul_characters_in_text_fields_are_4xx(
        self, api: httpx.Client, bob: User, path: str
    ) -> None:
        method = "PATCH" if path == "/users/me" else "POST"
        body = NUL_FIELDS[path]
        for field in body:
            one_bad = {**_clean(path), field: body[field]}
            headers = {**bob.auth, "Idempotency-Key": str(uuid.uuid4())}
            _assert_4xx(api.request(method, path, json=one_bad, headers=headers))

    def test_nul_characters_in_the_token_endpoint_are_4xx(self, api: httpx.Client) -> None:
        for form in (
            {"grant_type": "password", "username": "a\u0000b@example.com", "password": "x"},
            {"grant_type": "refresh_token", "refresh_token": "a\u0000b"},
        ):
            _assert_4xx(api.post("/auth/token", data=form))

    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            None,
        ],
    )
    @pytest.mark.parametrize("write", WRITES, ids=IDS)
    def test_a_body_that_is_not_json_is_415(
        self,
        api: httpx.Client,
        throwaway: dict[str, str],
        bob: User,
        write: Write,
        content_type: str | None,
    ) -> None:
        headers = _headers(write, bob, content_type)
        if write.path == "/auth/logout":
            headers.update(throwaway)
        response = api.request(write.method, write.path, content=b'{"name": "x"}', headers=headers)
        error = assert_error_envelope(response, 415)
        assert error["code"] == "unsupported_media_type"

    def test_json_sent_to_the_form_encoded_token_endpoint_is_400(self, api: httpx.Client) -> None:
        response = api.post(
            "/auth/token", json={"grant_type": "password", "username": "a", "password": "b"}
        )
        assert_error_envelope(response, 400)


def _clean(path: str) -> dict[str, object]:
    """A body for ``path`` that would be accepted (or refused for business reasons only)."""
    bodies: dict[str, dict[str, object]] = {
        "/auth/register": {"email": "clean@example.com", "password": "x" * 12, "name": "A"},
        "/auth/login": {"email": "clean@example.com", "password": "x"},
        "/auth/refresh": {"refresh_token": "r"},
        "/users/me": {"name": "Bob"},
        "/orders": {
            "items": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}],
            "currency": "USD",
            "payment_token": "tok_decline_sec",
        },
    }
    return bodies[path]
