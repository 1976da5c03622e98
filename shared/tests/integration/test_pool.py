"""The engine's pool hands out live connections without a round trip per checkout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit.db import create_engine


@pytest.fixture
async def single(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine with one pooled connection, so every checkout reuses it."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0, application_name="pool")
    yield engine
    await engine.dispose()


def count_statements(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    return seen


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


class TestLiveConnections:
    async def test_a_busy_connection_is_reused_without_pinging(self, single: AsyncEngine) -> None:
        await backend_pid(single)
        statements = count_statements(single)
        for _ in range(3):
            await backend_pid(single)
        # Three transactions, three statements: no ping round trips in between.
        assert len(statements) == 3

    async def test_a_connection_the_server_closed_is_replaced_before_use(
        self, single: AsyncEngine, engine: AsyncEngine
    ) -> None:
        pid = await backend_pid(single)
        async with engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await asyncio.sleep(0.2)  # the closed socket reaches the event loop

        assert await backend_pid(single) != pid
