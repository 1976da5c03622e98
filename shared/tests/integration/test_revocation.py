"""The per-service denylist: durable in PostgreSQL, seen by every instance within a second."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit.bus import ReceivedEvent
from servicekit.db import session_factory
from servicekit.events import EventData, SessionRevoked, UserDeleted, new_envelope
from servicekit.revocation import Denylist, revocations
from servicekit.security import Principal


def principal(user_id: uuid.UUID, *, jti: str | None = None, issued: datetime) -> Principal:
    return Principal(
        user_id=user_id,
        roles=frozenset(),
        jti=jti or uuid.uuid4().hex,
        expires_at=issued + timedelta(minutes=15),
        token="t",
        issued_at=issued,
    )


def received(data: EventData) -> ReceivedEvent:
    return ReceivedEvent(
        envelope=new_envelope(data, producer="auth"),
        data=data,
        attempt=1,
        deferrals=0,
        routing_key=data.event_type,
    )


async def apply(engine: AsyncEngine, handler: Any, event: ReceivedEvent) -> None:
    async with session_factory(engine)() as session, session.begin():
        await handler(event, session)


class TestDenylist:
    async def test_a_revoked_jti_is_refused_by_another_instance_within_a_second(
        self, engine: AsyncEngine
    ) -> None:
        async with engine.begin() as conn:
            await conn.run_sync(revocations.metadata.create_all)
        writer, reader = Denylist(engine), Denylist(engine)
        await writer.start()
        await reader.start()
        user = uuid.uuid4()
        now = datetime.now(UTC)
        token = principal(user, issued=now)
        other = principal(user, issued=now)
        assert not await reader.is_revoked(token)

        event = received(
            SessionRevoked(jti=token.jti, user_id=user, expires_at=now + timedelta(minutes=15))
        )
        await apply(engine, writer.on_session_revoked, event)
        assert await writer.is_revoked(token)
        started = time.monotonic()
        while not await reader.is_revoked(token):
            assert time.monotonic() - started < 1.0, "not seen within 1 s"
            await asyncio.sleep(0.02)
        assert not await reader.is_revoked(other), "only that token is revoked"

        fresh = Denylist(engine)  # a restarted instance: loaded from the database
        await fresh.start()
        assert await fresh.is_revoked(token)
        for denylist in (writer, reader, fresh):
            await denylist.stop()

    async def test_user_deleted_refuses_tokens_issued_before_not_after(
        self, engine: AsyncEngine
    ) -> None:
        async with engine.begin() as conn:
            await conn.run_sync(revocations.metadata.create_all)
        denylist = Denylist(engine)
        await denylist.start()
        user = uuid.uuid4()
        deleted_at = datetime.now(UTC)
        await apply(
            engine,
            denylist.on_user_deleted,
            received(UserDeleted(user_id=user, deleted_at=deleted_at)),
        )
        assert await denylist.is_revoked(principal(user, issued=deleted_at - timedelta(minutes=1)))
        assert not await denylist.is_revoked(
            principal(user, issued=deleted_at + timedelta(seconds=5))
        )
        assert not await denylist.is_revoked(principal(uuid.uuid4(), issued=deleted_at))
        await denylist.stop()

    async def test_expired_revocations_are_forgotten(self, engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await conn.run_sync(revocations.metadata.create_all)
        denylist = Denylist(engine)
        await denylist.start()
        user = uuid.uuid4()
        past = datetime.now(UTC) - timedelta(hours=1)
        token = principal(user, issued=past - timedelta(minutes=15))
        await apply(
            engine,
            denylist.on_session_revoked,
            received(SessionRevoked(jti=token.jti, user_id=user, expires_at=past)),
        )
        await denylist.refresh()
        assert not await denylist.is_revoked(token)
        await denylist.stop()
