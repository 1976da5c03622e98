"""``user.registered`` → a profile, once, within a second."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI

from servicekit.events import UserRegistered, format_utc, new_envelope
from servicekit.testing.plugin import serve_app
from servicekit.testing.tokens import TokenMinter
from servicekit.testing.waiting import wait_until
from users_service.config import Settings

from .support import ConsumerRecorder, runtime_of


def registration(user_id: uuid.UUID, *, name: str, registered_at: datetime) -> UserRegistered:
    return UserRegistered(
        user_id=user_id,
        email=f"{user_id.hex}@example.com",
        name=name,
        roles=[],
        registered_at=registered_at,
    )


class TestRegistration:
    async def test_the_profile_exists_within_a_second_of_registration(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        bus_factory: Callable[..., Any],
        token_minter: TokenMinter,
    ) -> None:
        user_id = uuid.uuid4()
        headers = token_minter.headers(user_id)
        registered_at = datetime.now(UTC)
        async with serve_app(app_factory(settings)) as client:
            before = await client.get("/users/me", headers=headers)
            bus = await bus_factory("auth", exchange=settings.events_exchange)
            await bus.publish(
                new_envelope(
                    registration(user_id, name="Ada Lovelace", registered_at=registered_at),
                    producer="auth",
                )
            )

            async def profile_exists() -> bool:
                return (await client.get("/users/me", headers=headers)).status_code == 200

            await wait_until(profile_exists, timeout=3, what="the profile from user.registered")
            profile = (await client.get("/users/me", headers=headers)).json()

        assert before.status_code == 404
        assert before.json()["error"]["code"] == "profile_not_found"
        assert profile == {
            "id": str(user_id),
            "email": f"{user_id.hex}@example.com",
            "name": "Ada Lovelace",
            "bio": None,
            "roles": [],
            "created_at": format_utc(registered_at),
            "updated_at": format_utc(registered_at),
        }

    async def test_repeated_registrations_create_nothing_new(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        bus_factory: Callable[..., Any],
        token_minter: TokenMinter,
    ) -> None:
        user_id = uuid.uuid4()
        headers = token_minter.headers(user_id)
        first_at = datetime.now(UTC)
        first = new_envelope(
            registration(user_id, name="First Name", registered_at=first_at), producer="auth"
        )
        # The same user again in a different event (say, auth re-registering after a crash).
        second = new_envelope(
            registration(user_id, name="Other Name", registered_at=first_at + timedelta(1)),
            producer="auth",
        )
        recorder = ConsumerRecorder()
        app = app_factory(settings)
        runtime_of(app).observers.append(recorder)
        async with serve_app(app) as client:
            bus = await bus_factory("auth", exchange=settings.events_exchange)
            await bus.publish(first)
            await bus.publish(first)

            async def first_applied() -> bool:
                return recorder.handled.count("user.registered") >= 1

            # Deliveries are handled concurrently; the later event must come later.
            await wait_until(first_applied, what="first applied")
            await bus.publish(second)

            async def all_three_consumed() -> bool:
                return (
                    recorder.handled.count("user.registered") >= 2
                    and recorder.duplicates.count("user.registered") >= 1
                )

            await wait_until(all_three_consumed, what="all three consumed")
            profile = (await client.get("/users/me", headers=headers)).json()

        assert recorder.handled.count("user.registered") == 2  # first, and second as a no-op
        assert recorder.duplicates.count("user.registered") == 1  # the redelivery, via the inbox
        assert recorder.retries == []
        assert recorder.dead_letters == []
        assert profile["name"] == "First Name"
        assert profile["created_at"] == format_utc(first_at)

    async def test_a_late_registration_does_not_bring_back_a_deleted_profile(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        bus_factory: Callable[..., Any],
        token_minter: TokenMinter,
    ) -> None:
        user_id = uuid.uuid4()
        admin = token_minter.headers(uuid.uuid4(), roles=["admin"])
        recorder = ConsumerRecorder()
        app = app_factory(settings)
        runtime_of(app).observers.append(recorder)
        async with serve_app(app) as client:
            bus = await bus_factory("auth", exchange=settings.events_exchange)
            now = datetime.now(UTC)
            await bus.publish(
                new_envelope(registration(user_id, name="Gone", registered_at=now), producer="auth")
            )

            async def visible() -> bool:
                return (await client.get(f"/users/{user_id}", headers=admin)).status_code == 200

            await wait_until(visible, what="visible")
            deleted = await client.delete("/users/me", headers=token_minter.headers(user_id))
            await bus.publish(
                new_envelope(registration(user_id, name="Back", registered_at=now), producer="auth")
            )

            async def both_handled() -> bool:
                return recorder.handled.count("user.registered") >= 2

            await wait_until(both_handled, what="both handled")
            after = await client.get(f"/users/{user_id}", headers=admin)

        assert deleted.status_code == 204
        assert after.status_code == 404
