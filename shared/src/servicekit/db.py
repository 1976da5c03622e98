"""Database helpers: engines, sessions, creating a service's own database."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import asyncpg
from sqlalchemy import BindParameter, MetaData, Table, bindparam, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A MetaData with stable constraint names, so Alembic migrations stay reproducible."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def bound_values(
    table: Table, names: Iterable[str], *, prefix: str = ""
) -> dict[str, BindParameter[Any]]:
    """``{column: bound parameter}`` for a statement built once and run with values per call.

    A statement built per call with its values in it is walked again for SQLAlchemy's cache
    key on every execution; one built once with these is not. ``prefix`` names the parameters
    apart from the columns (an UPDATE's SET keeps a column's own name for itself).
    """
    return {name: bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in names}


# A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 10.0
_LAST_CHECKIN = "servicekit_last_checkin"


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    application_name: str | None = None,
    ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
) -> AsyncEngine:
    """An asyncpg-backed engine with a bounded pool that hands out live connections only.

    SQLAlchemy's ``pool_pre_ping`` costs three round trips (BEGIN, a ping, ROLLBACK) on every
    checkout, as many as a whole short transaction. Instead a connection the server closed
    (restart, terminated backend) is noticed for free, since asyncpg sees the socket close, and
    only connections idle for longer than ``ping_after_idle`` seconds (behind which a silent
    network drop could hide) are pinged. Either way a dead connection is replaced before use.
    """
    connect_args: dict[str, object] = {"timeout": 5, "command_timeout": 30}
    if application_name:
        connect_args["server_settings"] = {"application_name": application_name}
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        connect_args=connect_args,
        # A statement's values (password hashes, token hashes, emails) stay out of its errors
        # and of SQLAlchemy's log lines.
        hide_parameters=True,
    )
    _hand_out_live_connections(engine, ping_after_idle)
    return engine


def _hand_out_live_connections(engine: AsyncEngine, ping_after_idle: float) -> None:
    def checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_LAST_CHECKIN] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed the connection")
        last = record.info.get(_LAST_CHECKIN)
        if last is not None and time.monotonic() - last > ping_after_idle:
            try:
                dbapi_connection.ping()
            except Exception as exc:
                raise DisconnectionError(f"ping failed: {exc}") from exc

    # The pool retries the checkout with a new connection when a listener raises.
    event.listen(engine.sync_engine, "checkin", checked_in)
    event.listen(engine.sync_engine, "checkout", checked_out)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def asyncpg_dsn(url: str | URL) -> str:
    """The plain ``postgresql://`` DSN asyncpg wants for a SQLAlchemy URL."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _admin_dsn(url: str) -> tuple[str, str]:
    parsed = make_url(url)
    if not parsed.database:
        raise ValueError(f"database URL names no database: {parsed!r}")
    return asyncpg_dsn(parsed.set(database="postgres")), parsed.database


async def ensure_database(url: str) -> bool:
    """Create the URL's database if it does not exist; True when it was created."""
    admin_dsn, name = _admin_dsn(url)
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{_ident(name)}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """Drop the URL's database, disconnecting its sessions."""
    admin_dsn, name = _admin_dsn(url)
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{_ident(name)}" WITH (FORCE)')
    finally:
        await conn.close()


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1``; raises when the database does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def _ident(name: str) -> str:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"unsafe database name: {name!r}")
    return name
