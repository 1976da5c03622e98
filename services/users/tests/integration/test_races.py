"""Writes racing each other and the registration consumer on one profile: a 404 or one outcome.

Each round starts the requests (and the consumer's handler, as ``deliver`` runs it) together,
staggered differently, so over the rounds they meet at every point of each other's transaction.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from servicekit.events import UserRegistered
from servicekit.testing.consuming import deliver
from servicekit.testing.plugin import serve_app
from servicekit.testing.tokens import TokenMinter
from users_service.config import Settings
from users_service.handlers import handle_user_registered
from users_service.models import DeletedUser, User

from .support import runtime_of

ROUNDS = 30


@pytest.fixture
def app(settings: Settings, app_factory: Callable[[Settings], FastAPI]) -> FastAPI:
    return app_factory(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(app) as client:
        yield client


def _registered(user_id: uuid.UUID) -> UserRegistered:
    return UserRegistered(
        user_id=user_id,
        email=f"{user_id.hex}@example.com",
        name="Racer",
        roles=[],
        registered_at=datetime.now(UTC),
    )


async def _stored(app: FastAPI, user_id: uuid.UUID) -> tuple[int, int]:
    async with runtime_of(app).sessions() as session:
        profiles = await session.scalar(
            select(func.count()).select_from(User).where(User.id == user_id)
        )
        tombstones = await session.scalar(
            select(func.count()).select_from(DeletedUser).where(DeletedUser.id == user_id)
        )
    return profiles or 0, tombstones or 0


async def _register(app: FastAPI, user_id: uuid.UUID, *, after: float = 0.0) -> None:
    sessions = runtime_of(app).sessions
    await deliver(
        sessions, handle_user_registered, _registered(user_id), producer="auth", after=after
    )


class TestUpdatesAndDeletesOfOneProfile:
    async def test_patch_and_two_deletes_at_once_end_with_one_deletion(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        seen: Counter[tuple[str, int]] = Counter()
        for round_ in range(ROUNDS):
            user_id = uuid.uuid4()
            await _register(app, user_id)
            headers = token_minter.headers(user_id)
            calls = [
                ("patch", client.patch("/users/me", json={"bio": "one"}, headers=headers)),
                ("delete", client.delete("/users/me", headers=headers)),
                ("patch", client.patch("/users/me", json={"name": "Two"}, headers=headers)),
                ("delete", client.delete("/users/me", headers=headers)),
            ]
            random.shuffle(calls)
            if round_ % 2:
                # One deletion strictly first, so the end where patches meet a deleted profile
                # is always checked; the other rounds race all four.
                calls.sort(key=lambda call: call[0] != "delete")
                responses = [await calls[0][1]]
                responses += await asyncio.gather(*(call for _, call in calls[1:]))
            else:
                responses = await asyncio.gather(*(call for _, call in calls))
            for (kind, _), response in zip(calls, responses, strict=True):
                # 401: the deletion's revocation reached this service's denylist already.
                allowed = {200, 401, 404} if kind == "patch" else {204, 401, 404}
                assert response.status_code in allowed, f"{kind}: {response.text}"
                seen[(kind, response.status_code)] += 1
            deletes = [
                r.status_code
                for (kind, _), r in zip(calls, responses, strict=True)
                if kind == "delete"
            ]
            assert deletes.count(204) == 1, deletes
            assert await _stored(app, user_id) == (0, 1)
            assert (await client.get("/users/me", headers=headers)).status_code in (401, 404)
        assert seen[("patch", 200)] > 0, seen
        assert seen[("patch", 404)] > 0, seen


class TestRegistrationRacingTheDeletion:
    async def test_a_repeated_user_registered_never_brings_a_deleted_profile_back(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        for _ in range(ROUNDS):
            user_id = uuid.uuid4()
            await _register(app, user_id)
            headers = token_minter.headers(user_id)
            # The same registration again, as a redelivery whose inbox row was already purged.
            deleted, _ = await asyncio.gather(
                client.delete("/users/me", headers=headers),
                _register(app, user_id, after=random.uniform(0, 0.01)),
            )
            assert deleted.status_code == 204, deleted.text
            assert await _stored(app, user_id) == (0, 1)

    async def test_a_delete_before_the_profile_exists_is_404_and_the_profile_then_exists(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        for _ in range(ROUNDS):
            user_id = uuid.uuid4()
            headers = token_minter.headers(user_id)
            deleted, _ = await asyncio.gather(
                client.delete("/users/me", headers=headers),
                _register(app, user_id, after=random.uniform(0, 0.01)),
            )
            assert deleted.status_code in (204, 404), deleted.text
            expected = (0, 1) if deleted.status_code == 204 else (1, 0)
            assert await _stored(app, user_id) == expected
