"""Buses given every node of a real three-node cluster move to a live node when theirs dies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.bus import EventBus
from servicekit.outbox import Outbox, OutboxRelay
from servicekit.testing.rabbitnodes import RabbitCluster, RabbitNode, free_port
from servicekit.testing.waiting import wait_until

from .support import count_effects, outbox
from .test_messaging import start_consumer, user_event

pytestmark = pytest.mark.timeout(420)

# "Within seconds", with a wide margin for a loaded 2-core machine.
RECONNECT_WITHIN = 20.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    with RabbitCluster.started(size=3) as started:
        yield started


def node_of(bus: EventBus, cluster: RabbitCluster) -> RabbitNode:
    """The node the bus is connected to now."""
    port = bus.connection.url.port
    return next(node for node in cluster.nodes if node.amqp_port == port)


async def on_another_node(bus: EventBus, cluster: RabbitCluster, left: RabbitNode) -> float:
    """Seconds until the bus is connected again, to a node other than ``left``."""
    started = time.monotonic()

    def moved() -> bool:
        return bus.is_connected and bus.connection.url.port != left.amqp_port

    await wait_until(moved, timeout=RECONNECT_WITHIN, interval=0.05, what="moved")
    return time.monotonic() - started


async def restart(node: RabbitNode, cluster: RabbitCluster) -> None:
    await asyncio.to_thread(node.start)
    everyone = sorted(n.nodename for n in cluster.nodes)
    await wait_until(lambda: cluster.running_nodes() == everyone, timeout=60, interval=0.5)


@pytest.fixture
async def cluster_bus(cluster: RabbitCluster) -> Any:
    buses: list[EventBus] = []
    exchange = f"failover{uuid.uuid4().hex[:8]}.events"

    async def make(service: str) -> EventBus:
        bus = EventBus(url=cluster.urls, exchange=exchange, service=service)
        await bus.connect()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()


class TestFailover:
    async def test_an_address_that_does_not_answer_is_skipped(self, cluster: RabbitCluster) -> None:
        nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
        live = cluster.nodes[0]
        for _ in range(4):  # whichever address it starts at
            bus = EventBus(url=f"{nobody},{live.url}", exchange="failover.events", service="t")
            await bus.connect()
            try:
                assert bus.connection.url.port == live.amqp_port
            finally:
                await bus.close()

    async def test_publisher_and_consumer_follow_the_cluster_through_node_deaths(
        self,
        cluster: RabbitCluster,
        cluster_bus: Any,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        producer_outbox: Outbox,
    ) -> None:
        consumer_bus: EventBus = await cluster_bus("consumer")
        producer: EventBus = await cluster_bus("producer")
        await start_consumer(consumer_bus, sessions)
        relay = OutboxRelay(engine=engine, table=outbox, publish=producer.publish_raw)
        await relay.start()
        published: list[uuid.UUID] = []

        async def place(count: int) -> None:
            for _ in range(count):
                async with sessions() as session, session.begin():
                    published.append((await producer_outbox.add(session, user_event())).id)

        try:
            await place(5)
            # The consumer's node, then (once it is back) the producer's, each SIGKILLed while
            # events keep being written: each bus reconnects to a live node, the consumer's
            # queues and subscription are restored there, nothing published is lost.
            for bus in (consumer_bus, producer):
                victim = node_of(bus, cluster)
                await asyncio.to_thread(victim.kill)
                writing = asyncio.create_task(place(10))
                seconds = await on_another_node(bus, cluster, victim)
                assert seconds < RECONNECT_WITHIN
                await writing
                await restart(victim, cluster)
            await place(5)

            async def all_applied() -> bool:
                return await count_effects(engine) == len(published)

            await wait_until(all_applied, timeout=90, interval=0.2, what="all applied")
            for event_id in published:
                assert await count_effects(engine, event_id) == 1
            assert await relay.backlog() == (0, 0.0)
        finally:
            await relay.stop()
