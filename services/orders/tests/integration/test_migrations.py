"""The migrations build exactly the schema the models describe, and undo cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from orders_service.cli import MIGRATIONS
from orders_service.config import Settings
from orders_service.models import Base
from servicekit.migrations import alembic_config, upgrade

OWN_TABLES = {"orders", "order_items", "idempotency_keys"}


def _owned_by_someone_else(diff: Any) -> bool:
    """Tables the shared library's migration adds without a model here (e.g. revocations)."""
    return (
        isinstance(diff, tuple)
        and diff[0] == "remove_table"
        and diff[1].name not in Base.metadata.tables
    )


async def _differences(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:

            def compare(sync_conn: Any) -> list[Any]:
                context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(context, Base.metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


class TestMigrations:
    def test_the_migrated_schema_matches_the_models(self, settings: Settings) -> None:
        differences = asyncio.run(_differences(settings.database_url))

        assert [d for d in differences if not _owned_by_someone_else(d)] == []

    def test_downgrade_and_upgrade_again(self, database_factory: Callable[[str], str]) -> None:
        url = database_factory("orders_migrations")
        upgrade(script_location=MIGRATIONS, database_url=url)
        config = alembic_config(script_location=MIGRATIONS, database_url=url)

        command.downgrade(config, "0001")
        assert not OWN_TABLES & asyncio.run(_tables(url))
        command.upgrade(config, "head")
        assert asyncio.run(_tables(url)) >= OWN_TABLES
