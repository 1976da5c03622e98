"""Alembic helpers: the body of every service's env.py, and upgrading a database."""

from __future__ import annotations

import asyncio

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from servicekit.db import ensure_database

# One lock id for every service: each has its own database, so they never contend.
_MIGRATION_LOCK = 7_340_021


def run_env(target_metadata: MetaData) -> None:
    """The body of a service's ``migrations/env.py`` (online, async engine, advisory lock)."""
    # Set by alembic_config() (the service's migrate command, the tests), or on Alembic's own
    # command line: ``alembic -x url=postgresql+asyncpg://... check``.
    url = context.config.get_main_option("sqlalchemy.url") or context.get_x_argument(
        as_dictionary=True
    ).get("url")
    if not url:
        raise RuntimeError("no database URL: pass it as `alembic -x url=...`")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, target_metadata))


async def _run_online(url: str, target_metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_migrate, target_metadata)
            await conn.commit()
    finally:
        await engine.dispose()


def _migrate(conn: Connection, target_metadata: MetaData) -> None:
    # Several instances may start at once; one migrates, the others wait and find nothing to do.
    conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK})
    try:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            compare_type=True,
            compare_server_default=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK})


def alembic_config(*, script_location: str, database_url: str) -> Config:
    """An Alembic config for a service's migrations package and database."""
    config = Config()
    config.set_main_option("script_location", script_location)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(*, script_location: str, database_url: str, revision: str = "head") -> None:
    """Create the database if needed and migrate it (call outside a running event loop)."""
    asyncio.run(ensure_database(database_url))
    command.upgrade(
        alembic_config(script_location=script_location, database_url=database_url), revision
    )
