"""A consumer process for the delay-queue tests: ``python -m tests.reliability.delayed_consumer``.

It defers every event once (``RetryLater``), so each one waits in a delay queue before it is
applied, and records the effect of the second delivery. Arguments: AMQP URL, exchange, database
URL, the delay in seconds. It runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.bus import Consumer, EventBus, ReceivedEvent, RetryLater
from servicekit.db import create_engine, session_factory

from .support import inbox, record_effect

SERVICE = "delayed"
PURPOSE = "deferring"


def consumer_for(
    bus: EventBus, sessions: async_sessionmaker[AsyncSession], delay: float
) -> Consumer:
    """The consumer the tests run, in-process or in this module's process."""

    async def handle(event: ReceivedEvent, session: AsyncSession) -> None:
        if event.deferrals == 0:
            raise RetryLater(delay, "waits once")
        await record_effect(event, session, PURPOSE)

    return bus.consumer(
        PURPOSE,
        handlers={"user.registered": handle},
        session_factory=sessions,
        inbox=inbox,
        # Deferred into the delay tier; a failure (a database refusing connections on a busy
        # machine) is retried after 0.5 s as often as it takes, never parked.
        retry_delays_ms=(500, int(delay * 1000)),
        max_attempts=1000,
        prefetch=50,
    )


async def main(amqp_url: str, exchange: str, database_url: str, delay: float) -> None:
    engine = create_engine(database_url, pool_size=5, max_overflow=5)
    bus = EventBus(url=amqp_url, exchange=exchange, service=SERVICE)
    await bus.connect()
    consumer = consumer_for(bus, session_factory(engine), delay)
    await consumer.start()
    print("consuming", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    url, exchange_name, database, seconds = sys.argv[1:5]
    asyncio.run(main(url, exchange_name, database, float(seconds)))
