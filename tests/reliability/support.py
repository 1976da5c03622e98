"""The reliability suites' tiny schema (inbox, ``effects``), its events and broker counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import aio_pika
from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit.bus import ReceivedEvent
from servicekit.db import new_metadata
from servicekit.events import UserRegistered
from servicekit.inbox import inbox_table

metadata: MetaData = new_metadata()
inbox = inbox_table(metadata)
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Uuid, nullable=False),
    Column("consumer", String(200), nullable=False),
)


def user_event(name: str = "Ada") -> UserRegistered:
    return UserRegistered(
        user_id=uuid.uuid4(),
        email=f"{uuid.uuid4().hex[:8]}@example.com",
        name=name,
        registered_at=datetime.now(UTC),
    )


async def record_effect(event: ReceivedEvent, session: AsyncSession, consumer: str) -> None:
    """The visible, countable effect of handling one event."""
    await session.execute(effects.insert().values(event_id=event.envelope.id, consumer=consumer))


async def count_effects(engine: AsyncEngine, consumer: str | None = None) -> int:
    query = select(func.count()).select_from(effects)
    if consumer is not None:
        query = query.where(effects.c.consumer == consumer)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def duplicate_effects(engine: AsyncEngine) -> int:
    """Events applied more than once."""
    query = select(effects.c.event_id).group_by(effects.c.event_id).having(func.count() > 1)
    async with engine.connect() as conn:
        return len((await conn.execute(query)).all())


async def queue_counts(
    channel: aio_pika.abc.AbstractChannel, names: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """``{queue: (ready messages, consumers)}`` as the broker counts them right now.

    A passive declare answers from the queue itself; ``rabbitmqctl list_queues`` reports a
    quorum queue's counts from statistics refreshed every few seconds.
    """
    counts = {}
    for name in sorted(names):
        queue = await channel.declare_queue(name, passive=True)
        result = queue.declaration_result
        counts[name] = (result.message_count, result.consumer_count)
    return counts
