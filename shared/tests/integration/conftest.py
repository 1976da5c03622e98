"""A throwaway schema with the messaging tables and an ``effects`` table handlers write to."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.bus import ReceivedEvent
from servicekit.db import create_engine, new_metadata, session_factory
from servicekit.events import UserRegistered
from servicekit.inbox import inbox_table
from servicekit.outbox import Outbox, outbox_table

metadata: MetaData = new_metadata()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Uuid, nullable=False),
    Column("user_id", Uuid, nullable=False),
    Column("note", String(100)),
)


@pytest.fixture(scope="session")
def database_url(database_factory: Callable[[str], str]) -> str:
    return database_factory("messaging")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5, max_overflow=5)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(text("TRUNCATE outbox, inbox, effects RESTART IDENTITY"))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def producer_outbox() -> Outbox:
    return Outbox(outbox, producer="tests")


async def record_effect(event: ReceivedEvent, session: AsyncSession) -> None:
    """A handler with a visible, countable effect."""
    data = event.payload(UserRegistered)
    await session.execute(
        effects.insert().values(event_id=event.envelope.id, user_id=data.user_id, note=data.name)
    )


async def count_effects(engine: AsyncEngine, event_id: uuid.UUID | None = None) -> int:
    query = select(func.count()).select_from(effects)
    if event_id is not None:
        query = query.where(effects.c.event_id == event_id)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())
