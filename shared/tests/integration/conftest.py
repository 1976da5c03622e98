"""A throwaway schema with the messaging tables and an ``effects`` table handlers write to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.db import create_engine, session_factory
from servicekit.outbox import Outbox

from .support import metadata, outbox


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
