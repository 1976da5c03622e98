"""Running an event handler the way the consumer runs it, for tests that race it with requests."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.bus import Handler, ReceivedEvent
from servicekit.events import EventData, new_envelope


async def deliver(
    sessions: async_sessionmaker[AsyncSession],
    handler: Handler,
    data: EventData,
    *,
    producer: str,
    after: float = 0.0,
) -> None:
    """Apply one event with ``handler`` in a transaction of its own, committed when it returns.

    ``after`` staggers the start (seconds): a test that races the handler against requests
    moves it across their transactions from round to round. It is not a wait for a condition.
    """
    await asyncio.sleep(after)
    event = ReceivedEvent(
        envelope=new_envelope(data, producer=producer),
        data=data,
        attempt=1,
        deferrals=0,
        routing_key=data.event_type,
    )
    async with sessions() as session, session.begin():
        await handler(event, session)
