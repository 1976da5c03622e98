"""Alembic helpers: the messaging tables every service adds, a shared env.py body, upgrades."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from servicekit.db import ensure_database
from servicekit.inbox import inbox_columns
from servicekit.outbox import outbox_columns
from servicekit.revocation import TABLE as REVOCATIONS
from servicekit.revocation import revocation_columns

# One lock id for every service: each has its own database, so they never contend.
_MIGRATION_LOCK = 7_340_021


def create_messaging_tables(op: Any, *, outbox: str = "outbox", inbox: str = "inbox") -> None:
    """Create the outbox, inbox and token revocation tables in an Alembic ``upgrade()``."""
    op.create_table(outbox, *outbox_columns())
    op.create_index(
        f"ix_{outbox}_pending",
        outbox,
        ["id"],
        postgresql_where=text("published_at IS NULL"),
    )
    op.create_table(inbox, *inbox_columns())
    op.create_table(REVOCATIONS, *revocation_columns())


def drop_messaging_tables(op: Any, *, outbox: str = "outbox", inbox: str = "inbox") -> None:
    """Drop them again in ``downgrade()``."""
    op.drop_table(REVOCATIONS)
    op.drop_table(inbox)
    op.drop_index(f"ix_{outbox}_pending", table_name=outbox)
    op.drop_table(outbox)


def run_env(target_metadata: MetaData) -> None:
    """The body of a service's ``migrations/env.py`` (online, async engine, advisory lock)."""
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url is not set")
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
        context.configure(connection=conn, target_metadata=target_metadata, compare_type=True)
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
