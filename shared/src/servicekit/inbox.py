"""The inbox: messages a consumer already applied, written in the handler's transaction."""

from __future__ import annotations

import uuid
from functools import cache

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Uuid, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from servicekit.db import bound_values


def inbox_columns() -> list[Column[object]]:
    """Fresh column objects for the inbox table."""
    return [
        Column("consumer", String(200), primary_key=True),
        Column("message_id", Uuid, primary_key=True),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


def inbox_table(metadata: MetaData, name: str = "inbox") -> Table:
    """Add the inbox table to a service's metadata."""
    table = Table(name, metadata, *inbox_columns())
    Index(f"ix_{name}_received_at", table.c.received_at)  # retention finds the old rows by it
    return table


async def record_receipt(
    session: AsyncSession, table: Table, *, consumer: str, message_id: uuid.UUID
) -> bool:
    """Insert (consumer, message id); False when it was there already (a redelivery)."""
    params = {"consumer": consumer, "message_id": message_id}
    result = await session.execute(_receipt_statement(table), params)
    return result.first() is not None


@cache
def _receipt_statement(table: Table) -> ReturningInsert[tuple[uuid.UUID]]:
    # Built once per table with bound parameters: building it per message, with the values in
    # it, made SQLAlchemy walk it again for its cache key every time (about a fifth of the
    # consumer's transaction).
    return (
        insert(table)
        .values(bound_values(table, ("consumer", "message_id")))
        .on_conflict_do_nothing()
        .returning(table.c.message_id)
    )
