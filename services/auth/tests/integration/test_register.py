"""POST /auth/register against the real database and broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from auth_service import service
from auth_service.config import Settings
from auth_service.main import create_app
from auth_service.models import Credential, outbox
from servicekit.events import UserRegistered
from servicekit.runtime import ServiceRuntime
from servicekit.testing.plugin import serve_app
from tests.helpers import GOOD_PASSWORD, new_email


class TestRegister:
    async def test_creates_the_account_with_a_normalised_email(
        self, client: httpx.AsyncClient
    ) -> None:
        local = f"Ada.{uuid.uuid4().hex[:8]}"
        response = await client.post(
            "/auth/register",
            json={"email": f"  {local}@Example.COM ", "password": GOOD_PASSWORD, "name": "Ada"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"id", "email", "name", "created_at"}
        assert body["email"] == f"{local.lower()}@example.com"
        assert body["name"] == "Ada"
        assert uuid.UUID(body["id"])
        assert body["created_at"].endswith("Z")
        assert "password" not in response.text

    async def test_the_same_email_in_other_case_is_a_conflict(
        self, client: httpx.AsyncClient
    ) -> None:
        email = new_email()
        first = await client.post(
            "/auth/register", json={"email": email, "password": GOOD_PASSWORD, "name": "A"}
        )
        second = await client.post(
            "/auth/register",
            json={"email": email.upper(), "password": GOOD_PASSWORD, "name": "B"},
        )
        assert first.status_code == 201
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "email_already_registered"

    @pytest.mark.parametrize(
        ("password", "expected"),
        [
            ("short-pw-1", "between 12 and 128 characters"),
            ("x" * 129, "between 12 and 128 characters"),
            ("password123456", "too common"),
            ("qwertyuiop123", "too common"),
            ("123456789012", "too common"),
            ("PassWord123456", "too common"),
        ],
    )
    async def test_weak_passwords_are_refused_with_a_clear_message(
        self, client: httpx.AsyncClient, password: str, expected: str
    ) -> None:
        response = await client.post(
            "/auth/register", json={"email": new_email(), "password": password, "name": "Weak"}
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "weak_password"
        assert expected in error["message"]

    async def test_the_password_may_not_be_the_email_or_the_name(
        self, client: httpx.AsyncClient
    ) -> None:
        email = new_email()
        as_email = await client.post(
            "/auth/register", json={"email": email, "password": email, "name": "Someone"}
        )
        as_name = await client.post(
            "/auth/register",
            json={
                "email": new_email(),
                "password": "Grace Hopper 1906",
                "name": "grace hopper 1906",
            },
        )
        assert as_email.status_code == 422
        assert "email address or your name" in as_email.json()["error"]["message"]
        assert as_name.status_code == 422
        assert "email address or your name" in as_name.json()["error"]["message"]

    async def test_a_128_character_unicode_password_is_accepted(
        self, client: httpx.AsyncClient
    ) -> None:
        password = ("pässwörd-ñ-" * 12)[:128]
        email = new_email()
        registered = await client.post(
            "/auth/register", json={"email": email, "password": password, "name": "Unicode"}
        )
        login = await client.post("/auth/login", json={"email": email, "password": password})
        assert registered.status_code == 201
        assert login.status_code == 200

    @pytest.mark.parametrize(
        "body",
        [
            {"email": "not-an-email", "password": GOOD_PASSWORD, "name": "X"},
            {"email": "a@example.com", "password": GOOD_PASSWORD},
            {"email": "a@example.com", "password": GOOD_PASSWORD, "name": ""},
        ],
    )
    async def test_invalid_input_is_422(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await client.post("/auth/register", json=body)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"


async def _credential_and_event_counts(runtime: ServiceRuntime, email: str) -> tuple[int, int]:
    async with runtime.sessions() as session:
        credentials = await session.scalar(
            select(func.count()).select_from(Credential).where(Credential.email == email)
        )
        events = await session.scalar(
            select(func.count())
            .select_from(outbox)
            .where(
                outbox.c.event_type == "user.registered",
                outbox.c.payload["data"]["email"].astext == email,
            )
        )
    return int(credentials or 0), int(events or 0)


class TestUserRegisteredOutbox:
    async def test_success_leaves_credential_and_event_and_publishes_it(
        self, settings: Settings, capture_events: Callable[..., Any]
    ) -> None:
        capture = await capture_events(settings.events_exchange, ["user.registered"])
        app = create_app(settings)
        email = new_email()
        async with serve_app(app) as client:
            response = await client.post(
                "/auth/register", json={"email": email, "password": GOOD_PASSWORD, "name": "Ev"}
            )
            user_id = response.json()["id"]
            counts = await _credential_and_event_counts(app.state.runtime, email)
            found = await capture.wait_for(
                "user.registered", where=lambda d: str(d.user_id) == user_id
            )
        assert response.status_code == 201
        assert counts == (1, 1)
        envelope, data = found[0]
        assert isinstance(data, UserRegistered)
        assert envelope.producer == "auth"
        assert data.email == email
        assert data.name == "Ev"
        assert data.roles == ["user"]

    async def test_a_failed_transaction_leaves_neither_row(self, settings: Settings) -> None:
        app = create_app(settings)
        email = new_email()
        async with serve_app(app):
            runtime: ServiceRuntime = app.state.runtime
            inside: list[tuple[int, int]] = []
            with pytest.raises(RolledBackError):
                await _register_then_fail(runtime, app.state.auth, email, inside)
            counts = await _credential_and_event_counts(runtime, email)
        # Both rows were written in the transaction, and neither survived its rollback.
        assert inside == [(1, 1)]
        assert counts == (0, 0)

    async def test_a_duplicate_registration_publishes_nothing_more(
        self, settings: Settings
    ) -> None:
        app = create_app(settings)
        email = new_email()
        async with serve_app(app) as client:
            body = {"email": email, "password": GOOD_PASSWORD, "name": "Once"}
            assert (await client.post("/auth/register", json=body)).status_code == 201
            assert (await client.post("/auth/register", json=body)).status_code == 409
            counts = await _credential_and_event_counts(app.state.runtime, email)
        assert counts == (1, 1)


class RolledBackError(Exception):
    """Makes a registration's transaction fail after its writes."""


async def _register_then_fail(
    runtime: ServiceRuntime, auth: Any, email: str, inside: list[tuple[int, int]]
) -> None:
    async with runtime.sessions() as session, session.begin():
        await service.register(
            session=session,
            hasher=auth.hasher,
            outbox=auth.outbox,
            email=email,
            password=GOOD_PASSWORD,
            name="Rolled Back",
        )
        inside.append(await _count_in(session, email))
        raise RolledBackError


async def _count_in(session: Any, email: str) -> tuple[int, int]:
    credentials = await session.scalar(
        select(func.count()).select_from(Credential).where(Credential.email == email)
    )
    events = await session.scalar(
        select(func.count())
        .select_from(outbox)
        .where(outbox.c.payload["data"]["email"].astext == email)
    )
    return int(credentials), int(events)
