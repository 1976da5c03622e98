"""Real PostgreSQL and RabbitMQ for the reliability suites: a tiny schema handlers write to.

The servers, the run's database and its exchange come from the shared library's pytest plugin
(``database_factory``, ``bus_factory``): everything is named after this run and removed after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.db import create_engine, session_factory

from .support import metadata


@pytest.fixture(scope="session")
def database_url(database_factory: Callable[[str], str]) -> str:
    return database_factory("reliability")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=10, max_overflow=5)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(text("TRUNCATE inbox, effects RESTART IDENTITY"))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)
