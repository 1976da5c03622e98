"""Watch what a service publishes: a private queue bound to the exchange, read in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from servicekit.events import EventData, EventEnvelope, parse_envelope


class EventCapture:
    """Collects every event published with the given routing keys (``#`` for all)."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._channel = channel
        self._queue = queue
        self.events: list[tuple[EventEnvelope, EventData]] = []

    @classmethod
    async def open(
        cls,
        connection: aio_pika.abc.AbstractConnection,
        exchange: str,
        keys: Sequence[str] = ("#",),
    ) -> EventCapture:
        """Bind an exclusive queue to ``exchange`` for ``keys``."""
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in keys:
            await queue.bind(ex, routing_key=key)
        return cls(channel, queue)

    async def _pull(self) -> None:
        while (msg := await self._queue.get(no_ack=True, fail=False)) is not None:
            self.events.append(parse_envelope(msg.body))

    async def wait_for(
        self,
        event_type: str,
        where: Callable[[EventData], bool] = lambda _: True,
        *,
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[tuple[EventEnvelope, EventData]]:
        """Wait until ``count`` matching events arrived; returns them (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            await self._pull()
            found = [(e, d) for e, d in self.events if e.type == event_type and where(d)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [e.type for e, _ in self.events]
                raise AssertionError(f"{count} × {event_type} not published in time; saw {seen}")
            await asyncio.sleep(0.05)

    async def of_type(self, event_type: str) -> list[tuple[EventEnvelope, EventData]]:
        """Every event of a type received so far."""
        await self._pull()
        return [(e, d) for e, d in self.events if e.type == event_type]

    async def close(self) -> None:
        """Delete the queue."""
        if not self._channel.is_closed:
            await self._channel.close()
