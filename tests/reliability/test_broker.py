"""After the broker drops their connections, consumers come back by themselves and catch up.

Two instances of a service consume one queue (as two processes of a scaled service would).
Mid-stream, the broker force-closes both instances' connections (only this test's, by name),
a few seconds after they connected (a client waits up to its reconnect interval, 5 s, before
reconnecting a connection that was made that recently). The producer keeps publishing
meanwhile, so a backlog builds up. Both consumers must be registered on the queue again
within 10 s of the drop, and the backlog must drain with every event applied exactly once —
the messages unacked when the connections dropped included.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.bus import EventBus, ReceivedEvent
from servicekit.events import new_envelope
from servicekit.testing.plugin import close_connections
from servicekit.testing.waiting import wait_until

from .support import (
    count_effects,
    duplicate_effects,
    inbox,
    queue_counts,
    record_effect,
    user_event,
)

SERVICE = "reliability-consumer"
INSTANCES = 2
BEFORE_DROP = 100
DURING_DROP = 300
HANDLER_LATENCY = 0.005
BACK_WITHIN = 10.0


def consumer_channels(queue: str) -> set[str]:
    """The channels ``rabbitmqctl list_consumers`` shows consuming ``queue``."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to list the broker's consumers (RabbitMQ's CLI tools)")
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_consumers", "queue_name", "channel_pid", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = (line.split() for line in listing.stdout.splitlines())
    return {row[1] for row in rows if len(row) == 2 and row[0] == queue}


async def drop_and_time_return(instances: list[EventBus], exchange: str, queue: str) -> float:
    """Drop every instance's connection; seconds from the last drop until all consume again.

    Back means: the broker lists as many consumers on the queue as there are instances, each
    on a channel opened after the drop (a consumer of a dropped channel is gone for good).
    """
    before = await asyncio.to_thread(consumer_channels, queue)
    assert len(before) == len(instances)
    closed_at: dict[int, float] = {}
    for index, bus in enumerate(instances):
        bus.connection.close_callbacks.add(
            lambda *_, index=index: closed_at.setdefault(index, time.monotonic())
        )
    # Only this test's connections: they are named "<service>@<exchange>:<id>".
    dropping = asyncio.create_task(
        asyncio.to_thread(close_connections, f"{SERVICE}@{exchange}:", "test: dropped")
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        channels = await asyncio.to_thread(consumer_channels, queue)
        if len(closed_at) == len(instances) and len(channels - before) == len(instances):
            back_after = time.monotonic() - max(closed_at.values())
            break
    else:
        pytest.fail(f"consumers not back a minute after the drop (dropped: {sorted(closed_at)})")
    assert await dropping == len(instances), "the broker closed each instance's connection"
    return back_after


async def test_consumers_are_back_within_10s_of_a_connection_drop_and_the_backlog_drains(
    bus_factory: Any,
    exchange_name: str,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    async def handle(event: ReceivedEvent, session: AsyncSession) -> None:
        await asyncio.sleep(HANDLER_LATENCY)
        await record_effect(event, session, "dropped")

    instances: list[EventBus] = [await bus_factory(SERVICE) for _ in range(INSTANCES)]
    for bus in instances:
        consumer = bus.consumer(
            "dropped",
            handlers={"user.registered": handle},
            session_factory=sessions,
            inbox=inbox,
            retry_delays_ms=(200, 400),
            prefetch=16,
        )
        await consumer.start()
    queue = consumer.queue_name
    producer: EventBus = await bus_factory("reliability-producer")
    probe = await producer.connection.channel()
    assert (await queue_counts(probe, [queue]))[queue][1] == INSTANCES

    async def publish(count: int) -> None:
        for _ in range(count):
            await producer.publish(new_envelope(user_event(), producer="tests"))

    await publish(BEFORE_DROP)

    async def some_applied() -> bool:
        return await count_effects(engine) >= BEFORE_DROP // 2

    await wait_until(some_applied, timeout=10, what="some applied")

    outage = asyncio.create_task(publish(DURING_DROP))
    back_after = await drop_and_time_return(instances, exchange_name, queue)
    await outage
    print(f"consumers back {back_after:.2f} s after the drop")
    assert back_after <= BACK_WITHIN, f"consumers back only {back_after:.1f} s after the drop"

    total = BEFORE_DROP + DURING_DROP

    async def drained() -> bool:
        ready = (await queue_counts(probe, [queue]))[queue][0]
        return ready == 0 and await count_effects(engine) >= total

    await wait_until(drained, timeout=30, what=f"the queue drained and all {total} applied")
    await asyncio.sleep(0.5)  # redeliveries of what was unacked at the drop have arrived
    assert await count_effects(engine) == total
    assert await duplicate_effects(engine) == 0
    others = set().union(*(bus.declared_queues for bus in instances)) - {queue}
    leftovers = {name: c for name, c in (await queue_counts(probe, others)).items() if c[0]}
    assert not leftovers, f"messages retried or parked: {leftovers}"
    await probe.close()
