"""Users and requests against the running system, as a client would make them."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from e2e.support import System

from servicekit.testing.waiting import wait_until_sync

PASSWORD = "correct horse battery staple 42"
WEBHOOK_SIGNATURE_HEADER = "Provider-Signature"


@dataclass
class User:
    """A registered, logged-in user."""

    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def new_email(tag: str = "sec") -> str:
    return f"{tag}.{uuid.uuid4().hex[:12]}@example.com"


def register(api: httpx.Client, name: str = "Ada", *, password: str = PASSWORD) -> User:
    """Register and log in through the gateway; wait until the profile exists."""
    email = new_email()
    created = api.post("/auth/register", json={"email": email, "password": password, "name": name})
    assert created.status_code == 201, created.text
    tokens = api.post("/auth/login", json={"email": email, "password": password})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    user = User(created.json()["id"], email, password, body["access_token"], body["refresh_token"])
    wait_until_sync(
        lambda: api.get("/users/me", headers=user.auth).status_code == 200,
        timeout=10,
        what="the profile created from user.registered",
    )
    return user


def place_order(
    api: httpx.Client, user: User, *, token: str = "tok_visa", **extra: Any
) -> httpx.Response:
    """POST /orders with one line, a fresh Idempotency-Key and ``extra`` body fields."""
    body = {
        "items": [{"sku": "SEC-1", "quantity": 2, "unit_price": "10.50"}],
        "currency": "USD",
        "payment_token": token,
        **extra,
    }
    headers = {**user.auth, "Idempotency-Key": str(uuid.uuid4())}
    return api.post("/orders", json=body, headers=headers)


def assert_error_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response has ``status`` and the JSON error envelope; returns its ``error``."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["code"], str), error
    assert error["code"], error
    assert isinstance(error["message"], str), error
    assert error["request_id"], error
    return error


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """``Provider-Signature`` as the provider computes it: ``t=<unix>,v1=<hex HMAC-SHA256>`` of
    ``"<t>." + body`` with the shared secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def client_from(system: System, address: str) -> httpx.Client:
    """A gateway client connecting from another loopback address: another client to nginx."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=system.gateway, timeout=15, transport=transport)
