"""Consuming user.deleted: credentials gone, every token of the user revoked."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from auth_service.config import Settings
from auth_service.main import create_app
from servicekit.events import SessionRevoked, UserDeleted, new_envelope
from servicekit.testing.plugin import serve_app
from tests.helpers import GOOD_PASSWORD, new_email


async def _register_and_login(client: httpx.AsyncClient) -> tuple[str, str, dict[str, Any]]:
    email = new_email()
    registered = await client.post(
        "/auth/register", json={"email": email, "password": GOOD_PASSWORD, "name": "Gone"}
    )
    pair = await client.post("/auth/login", json={"email": email, "password": GOOD_PASSWORD})
    assert pair.status_code == 200
    return registered.json()["id"], email, pair.json()


class TestUserDeleted:
    async def test_removes_the_credentials_and_revokes_every_token(
        self,
        settings: Settings,
        bus_factory: Callable[..., Any],
        capture_events: Callable[..., Any],
    ) -> None:
        capture = await capture_events(settings.events_exchange, ["session.revoked"])
        async with serve_app(create_app(settings)) as client:
            user_id, email, pair = await _register_and_login(client)
            users = await bus_factory("users", exchange=settings.events_exchange)
            deleted_at = datetime.now(UTC)
            envelope = new_envelope(
                UserDeleted(user_id=uuid.UUID(user_id), deleted_at=deleted_at), producer="users"
            )
            await users.publish(envelope)
            # Delivered twice, as at-least-once delivery may: the second has no effect.
            await users.publish(envelope)

            found = await capture.wait_for(
                "session.revoked", where=lambda d: str(d.user_id) == user_id and d.jti is None
            )
            login = await client.post(
                "/auth/login", json={"email": email, "password": GOOD_PASSWORD}
            )
            refresh = await client.post(
                "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
            )
            again = await client.post(
                "/auth/register", json={"email": email, "password": GOOD_PASSWORD, "name": "New"}
            )
            revocations = [
                d for _, d in await capture.of_type("session.revoked") if str(d.user_id) == user_id
            ]

        envelope_out, data = found[0]
        assert isinstance(data, SessionRevoked)
        assert data.revoked_at is not None
        assert data.revoked_at >= deleted_at
        # Every token issued before revoked_at expires by expires_at at the latest.
        assert (
            data.expires_at - data.revoked_at
        ).total_seconds() == settings.access_token_ttl_seconds
        assert envelope_out.causation_id == envelope.id
        assert envelope_out.correlation_id == envelope.correlation_id
        assert len(revocations) == 1
        assert login.status_code == 401
        assert refresh.status_code == 401
        # The email is free again: nothing of the old account is kept.
        assert again.status_code == 201

    async def test_an_unknown_user_is_acknowledged_without_effect(
        self,
        settings: Settings,
        bus_factory: Callable[..., Any],
        capture_events: Callable[..., Any],
    ) -> None:
        capture = await capture_events(settings.events_exchange, ["session.revoked"])
        stranger = uuid.uuid4()
        async with serve_app(create_app(settings)) as client:
            user_id, _, _ = await _register_and_login(client)
            users = await bus_factory("users", exchange=settings.events_exchange)
            await users.publish(
                new_envelope(
                    UserDeleted(user_id=stranger, deleted_at=datetime.now(UTC)), producer="users"
                )
            )
            # A later event for a real user is handled: the unknown one did not block the queue.
            await users.publish(
                new_envelope(
                    UserDeleted(user_id=uuid.UUID(user_id), deleted_at=datetime.now(UTC)),
                    producer="users",
                )
            )
            await capture.wait_for("session.revoked", where=lambda d: str(d.user_id) == user_id)
            for_stranger = [
                d for _, d in await capture.of_type("session.revoked") if d.user_id == stranger
            ]
        assert for_stranger == []
