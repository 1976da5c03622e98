"""Messages waiting in a delay queue survive the broker's restart and their consumer's death.

Every event is deferred once (``RetryLater``), so it waits in the consumer's delay queue before
it is applied. While they wait, the broker is stopped and started (``stop_app`` /
``start_app``), or the consumer process is SIGKILLed and another one started: every event must
still be applied, exactly once. This runs on a throwaway RabbitMQ node of its own, never on the
machine's broker.

Classic TTL queues dead-letter at most once: a message that expires while the broker starts
and its target queue is not ready yet is dropped. The delay queues are quorum queues that
dead-letter at-least-once, so it waits in the delay queue instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.bus import EventBus
from servicekit.events import new_envelope
from servicekit.testing.rabbitnodes import RabbitNode, rabbit_node
from servicekit.testing.waiting import wait_until

from .delayed_consumer import PURPOSE, SERVICE, consumer_for
from .support import count_effects, duplicate_effects, queue_counts, user_event

EVENTS = 300
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    with rabbit_node() as started:
        yield started


@pytest.fixture
async def buses(node: RabbitNode) -> AsyncIterator[tuple[EventBus, EventBus]]:
    """A producer and a consumer bus on a fresh exchange of the throwaway node."""
    exchange = f"delay{uuid.uuid4().hex[:8]}.events"
    producer = EventBus(url=node.url, exchange=exchange, service="producer")
    consumer = EventBus(url=node.url, exchange=exchange, service=SERVICE)
    await producer.connect()
    await consumer.connect()
    yield producer, consumer
    await consumer.close()
    await producer.close()


async def publish_all(producer: EventBus) -> None:
    """Every event, confirmed; at once, so that they all wait in the delay queue together."""
    await asyncio.gather(
        *(producer.publish(new_envelope(user_event(), producer="tests")) for _ in range(EVENTS))
    )


async def delayed(bus: EventBus, queue: str) -> int:
    channel = await bus.connection.channel()
    try:
        return (await queue_counts(channel, [queue]))[queue][0]
    finally:
        await channel.close()


async def all_applied_once(engine: AsyncEngine) -> None:
    async def done() -> bool:
        return await count_effects(engine) >= EVENTS

    await wait_until(done, timeout=120, interval=0.5, what=f"all {EVENTS} events applied")
    await asyncio.sleep(1.0)  # bounded: no late duplicate arrives
    assert await count_effects(engine) == EVENTS
    assert await duplicate_effects(engine) == 0


async def test_messages_in_a_delay_queue_all_arrive_across_a_broker_restart(
    node: RabbitNode,
    buses: tuple[EventBus, EventBus],
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    producer, bus = buses
    consumer = consumer_for(bus, sessions, delay=6.0)
    await consumer.start()
    delay_queue = consumer.retry_queue_name(6000)
    await publish_all(producer)

    async def waiting() -> bool:
        return await delayed(bus, delay_queue) >= EVENTS // 2

    await wait_until(waiting, timeout=30, what="the events waiting in the delay queue")
    # They expire while the node stops and starts, before the main queue is back.
    await asyncio.to_thread(node.stop_app)
    await asyncio.sleep(3.0)
    await asyncio.to_thread(node.start_app)

    await all_applied_once(engine)


async def test_messages_in_a_delay_queue_all_arrive_when_their_consumer_is_killed(
    node: RabbitNode,
    buses: tuple[EventBus, EventBus],
    database_url: str,
    engine: AsyncEngine,
) -> None:
    producer, bus = buses

    def start_consumer() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.delayed_consumer",
                node.url,
                bus.exchange_name,
                database_url,
                "6.0",
            ],
            cwd=REPO,
            start_new_session=True,
        )

    first = start_consumer()
    try:
        delay_queue = f"{bus.queue_name(PURPOSE)}.delay.6000ms"

        async def declared() -> bool:
            try:
                await delayed(bus, delay_queue)
            except Exception:
                return False
            return True

        await wait_until(declared, timeout=60, interval=0.5, what="declared")
        await publish_all(producer)

        async def waiting() -> bool:
            return await delayed(bus, delay_queue) >= EVENTS // 2

        await wait_until(waiting, timeout=30, what="waiting")
        os.killpg(first.pid, signal.SIGKILL)  # mid-stream: some held unacked, most waiting
        first.wait()
        second = start_consumer()
        try:
            await all_applied_once(engine)
        finally:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
