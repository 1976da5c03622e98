"""Requests racing the account's deletion: each is refused (401) or done and then undone, never 500.

The ``user.deleted`` handler runs in its own transaction, exactly as the consumer runs it, while
logins, refreshes and logouts of the same user are in flight. Each round starts them all at once,
so over the rounds the deletion lands at every point of their transactions.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from auth_service import handlers
from auth_service.config import Settings
from auth_service.main import create_app
from auth_service.models import Credential, RefreshFamily
from servicekit.events import UserDeleted
from servicekit.runtime import ServiceRuntime
from servicekit.testing.consuming import deliver
from servicekit.testing.plugin import serve_app
from tests.helpers import GOOD_PASSWORD, new_email

ROUNDS = 20
LOGINS = 6


async def _delete_user(app: FastAPI, user_id: uuid.UUID, *, after: float = 0.0) -> None:
    """What the consumer does with ``user.deleted``."""
    runtime: ServiceRuntime = app.state.runtime
    data = UserDeleted(user_id=user_id, deleted_at=datetime.now(UTC))
    handler = handlers.user_deleted(app.state.auth)
    await deliver(runtime.sessions, handler, data, producer="users", after=after)


async def _left_behind(app: FastAPI, user_id: uuid.UUID) -> tuple[int, int]:
    runtime: ServiceRuntime = app.state.runtime
    async with runtime.sessions() as session:
        credentials = await session.scalar(
            select(func.count()).select_from(Credential).where(Credential.id == user_id)
        )
        families = await session.scalar(
            select(func.count()).select_from(RefreshFamily).where(RefreshFamily.user_id == user_id)
        )
    return credentials or 0, families or 0


async def _round(app: FastAPI, client: httpx.AsyncClient) -> Counter[tuple[str, int]]:
    email = new_email()
    registered = await client.post(
        "/auth/register", json={"email": email, "password": GOOD_PASSWORD, "name": "Racer"}
    )
    assert registered.status_code == 201, registered.text
    user_id = uuid.UUID(registered.json()["id"])
    started = time.perf_counter()
    first = await client.post("/auth/login", json={"email": email, "password": GOOD_PASSWORD})
    one_login = time.perf_counter() - started
    second = await client.post("/auth/login", json={"email": email, "password": GOOD_PASSWORD})
    third = await client.post("/auth/login", json={"email": email, "password": GOOD_PASSWORD})
    assert first.status_code == second.status_code == third.status_code == 200
    credentials = {"email": email, "password": GOOD_PASSWORD}
    requests = {
        **{f"login-{n}": client.post("/auth/login", json=credentials) for n in range(LOGINS)},
        "token-password": client.post(
            "/auth/token",
            data={"grant_type": "password", "username": email, "password": GOOD_PASSWORD},
        ),
        "refresh": client.post(
            "/auth/refresh", json={"refresh_token": first.json()["refresh_token"]}
        ),
        "token-refresh": client.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": second.json()["refresh_token"]},
        ),
        "logout": client.post(
            "/auth/logout",
            json={"refresh_token": third.json()["refresh_token"]},
            headers={"Authorization": f"Bearer {third.json()['access_token']}"},
        ),
    }
    names = list(requests)
    *responses, _ = await asyncio.gather(
        *requests.values(), _delete_user(app, user_id, after=random.uniform(0, LOGINS * one_login))
    )
    statuses: Counter[tuple[str, int]] = Counter()
    issued: list[dict[str, object]] = []
    for name, response in zip(names, responses, strict=True):
        kind = name.split("-")[0] if name.startswith("login") else name
        statuses[(kind, response.status_code)] += 1
        allowed = {204, 401} if name == "logout" else {200, 401}
        assert response.status_code in allowed, f"{name}: {response.status_code} {response.text}"
        if response.status_code == 200:
            issued.append(response.json())

    # Nothing of the account is left, whatever was issued during the deletion.
    assert await _left_behind(app, user_id) == (0, 0)
    for pair in issued:
        again = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert again.status_code == 401, again.text
    return statuses


class TestRacingTheDeletion:
    async def test_logins_refreshes_and_logouts_during_user_deleted_never_fail(
        self, settings: Settings
    ) -> None:
        app = create_app(settings)
        totals: Counter[tuple[str, int]] = Counter()
        async with serve_app(app) as client:
            for _ in range(ROUNDS):
                totals += await _round(app, client)
        # Both outcomes happened: the rounds really raced the deletion.
        assert totals[("login", 200)] > 0, totals
        assert totals[("login", 401)] > 0, totals
