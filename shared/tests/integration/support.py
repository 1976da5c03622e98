"""The messaging tables, an ``effects`` table, the handler that writes to it and its count."""

from __future__ import annotations

import uuid

from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit.bus import ReceivedEvent
from servicekit.db import new_metadata
from servicekit.events import UserRegistered
from servicekit.inbox import inbox_table
from servicekit.outbox import outbox_table

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
