"""Helpers of the users integration tests: the started app's parts, profiles, observers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.engine import Connection

from servicekit.events import UserRegistered
from servicekit.runtime import ServiceRuntime
from users_service import service
from users_service.resources import UsersResources


def runtime_of(app: FastAPI) -> ServiceRuntime:
    """The started app's shared runtime (engine, Redis, bus…)."""
    runtime: ServiceRuntime = app.state.runtime
    return runtime


def resources_of(app: FastAPI) -> UsersResources:
    """The started app's cache and cached reader."""
    resources: UsersResources = app.state.users
    return resources


async def create_profile(
    app: FastAPI,
    *,
    name: str = "Ada Lovelace",
    roles: Iterable[str] = (),
    created_at: datetime | None = None,
    user_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Create a profile the way the registration consumer does (without the broker)."""
    user_id = user_id or uuid.uuid4()
    data = UserRegistered(
        user_id=user_id,
        email=f"{user_id.hex}@example.com",
        name=name,
        roles=list(roles),
        registered_at=created_at or datetime.now(UTC),
    )
    async with runtime_of(app).sessions() as session, session.begin():
        assert await service.create_profile(session=session, data=data)
    return user_id


class UserSelects:
    """Counts the SELECTs on the users table that an engine sends to PostgreSQL."""

    _FROM_USERS = re.compile(r"\bFROM users\b")

    def __init__(self) -> None:
        self.count = 0
        self._engines: list[Any] = []

    def watch(self, app: FastAPI) -> None:
        engine = runtime_of(app).engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._on_execute)
        self._engines.append(engine)

    def _on_execute(
        self, _conn: Connection, _cursor: Any, statement: str, *_: Any, **__: Any
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT") and self._FROM_USERS.search(statement):
            self.count += 1

    def close(self) -> None:
        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._on_execute)


@dataclass
class ConsumerRecorder:
    """A consumer observer: which events the app's consumers applied, skipped or parked."""

    handled: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)

    def on_handled(self, queue: str, event_type: str, seconds: float) -> None:
        self.handled.append(event_type)

    def on_duplicate(self, queue: str, event_type: str) -> None:
        self.duplicates.append(event_type)

    def on_retry(self, queue: str, event_type: str, reason: str) -> None:
        self.retries.append(f"{event_type}: {reason}")

    def on_dead_letter(self, queue: str, event_type: str, reason: str) -> None:
        self.dead_letters.append(f"{event_type}: {reason}")
