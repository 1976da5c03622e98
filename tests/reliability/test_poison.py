"""A poison message is parked after N tries and costs healthy traffic almost nothing.

One consumer's healthy throughput is measured on a backlog of healthy events, without poison
and with poison events mixed into the backlog plus a steady stream of more arriving while it
drains, in alternating rounds so that the machine's own noise falls on both; with poison it
must keep at least 90%. Each healthy event makes a 100 ms downstream call, so throughput is a
matter of the consumer's concurrency slots: what a poison message would take from healthy
traffic by blocking the queue, being redelivered in a tight loop, or holding a slot while it
waits for its retry. Each poison event must be tried exactly N times, then sit in the
dead-letter queue with its attempt count and reason, having had no effect.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.bus import HEADER_ATTEMPT, HEADER_REASON, Consumer, EventBus, ReceivedEvent
from servicekit.events import EventEnvelope, UserRegistered, new_envelope
from servicekit.testing.waiting import wait_until

from .support import (
    count_effects,
    duplicate_effects,
    inbox,
    queue_counts,
    record_effect,
    user_event,
)

POISON = "poison"
RETRY_DELAYS_MS = (50, 100, 200)
TRIES = len(RETRY_DELAYS_MS) + 1  # the first delivery and one per retry delay
HANDLER_LATENCY = 0.1  # the downstream call a healthy event makes
CONCURRENCY = 4
HEALTHY_PER_ROUND = 120
POISON_EVERY = 40  # one poison event per this many healthy ones in the backlog
POISON_STREAM_INTERVAL = 0.5  # and one more arriving every so often while it drains
ROUNDS = 3
MIN_RATIO = 0.9


@dataclass
class Probe:
    """Counts what one consumer did; a ConsumerObserver."""

    wanted: int
    handled: int = 0
    dead_lettered: int = 0
    retried: int = 0
    done_at: float | None = None
    tries: Counter[uuid.UUID] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_handled(self, queue: str, event_type: str, seconds: float) -> None:
        self.handled += 1
        if self.handled == self.wanted:
            self.done_at = time.monotonic()
            self.done.set()

    def on_duplicate(self, queue: str, event_type: str) -> None:
        pass

    def on_retry(self, queue: str, event_type: str, reason: str) -> None:
        self.retried += 1

    def on_dead_letter(self, queue: str, event_type: str, reason: str) -> None:
        self.dead_lettered += 1


@dataclass
class Round:
    healthy: int
    seconds: float
    poison: list[uuid.UUID]

    @property
    def throughput(self) -> float:
        return self.healthy / self.seconds


def consumer_for(
    bus: EventBus, purpose: str, sessions: async_sessionmaker[AsyncSession], probe: Probe
) -> Consumer:
    async def handle(event: ReceivedEvent, session: AsyncSession) -> None:
        if event.payload(UserRegistered).name == POISON:
            probe.tries[event.envelope.id] += 1
            raise ValueError("refers to something that does not exist")
        await asyncio.sleep(HANDLER_LATENCY)
        await record_effect(event, session, purpose)

    return bus.consumer(
        purpose,
        handlers={"user.registered": handle},
        session_factory=sessions,
        inbox=inbox,
        retry_delays_ms=RETRY_DELAYS_MS,
        prefetch=2 * CONCURRENCY,
        concurrency=CONCURRENCY,
        observers=[probe],
    )


async def prepare_queue(channel: aio_pika.abc.AbstractChannel, consumer: Consumer) -> None:
    """Declare the consumer's queue as it will, so that a backlog can wait in it."""
    arguments = consumer.queue_arguments()[consumer.queue_name]
    await channel.declare_queue(consumer.queue_name, durable=True, arguments=arguments)


async def send(channel: aio_pika.abc.AbstractChannel, queue: str, envelope: EventEnvelope) -> None:
    """Put one event straight into ``queue`` (confirmed), as the exchange would route it."""
    await channel.default_exchange.publish(
        aio_pika.Message(
            envelope.to_json(),
            message_id=str(envelope.id),
            type=envelope.type,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=queue,
    )


async def run_round(
    bus: EventBus,
    channel: aio_pika.abc.AbstractChannel,
    sessions: async_sessionmaker[AsyncSession],
    purpose: str,
    *,
    with_poison: bool,
) -> Round:
    probe = Probe(wanted=HEALTHY_PER_ROUND)
    consumer = consumer_for(bus, purpose, sessions, probe)
    await prepare_queue(channel, consumer)
    poison: list[uuid.UUID] = []
    backlog = []
    for i in range(HEALTHY_PER_ROUND):
        if with_poison and i % POISON_EVERY == 0:
            backlog.append(new_envelope(user_event(POISON), producer="tests"))
            poison.append(backlog[-1].id)
        backlog.append(new_envelope(user_event(f"user {i}"), producer="tests"))
    for start in range(0, len(backlog), 100):
        await asyncio.gather(
            *(send(channel, consumer.queue_name, e) for e in backlog[start : start + 100])
        )

    drained = asyncio.Event()

    async def poison_stream() -> None:
        while not drained.is_set():
            await asyncio.sleep(POISON_STREAM_INTERVAL)
            envelope = new_envelope(user_event(POISON), producer="tests")
            await send(channel, consumer.queue_name, envelope)
            poison.append(envelope.id)

    started = time.monotonic()
    stream = asyncio.create_task(poison_stream()) if with_poison else None
    await consumer.start()
    try:
        await asyncio.wait_for(probe.done.wait(), timeout=60)
    finally:
        drained.set()
        if stream is not None:
            await stream
    assert probe.done_at is not None
    elapsed = probe.done_at - started

    if with_poison:

        async def all_parked() -> bool:
            return probe.dead_lettered == len(poison)

        await wait_until(all_parked, timeout=10, what=f"all {len(poison)} poison events parked")
        assert set(probe.tries) == set(poison)
        assert set(probe.tries.values()) == {TRIES}, "each poison event is tried exactly N times"
        assert probe.retried == (TRIES - 1) * len(poison)
    await consumer.stop()
    return Round(healthy=probe.handled, seconds=elapsed, poison=poison)


async def parked(bus: EventBus, dlq: str) -> list[Any]:
    channel = await bus.connection.channel()
    queue = await channel.get_queue(dlq, ensure=False)
    messages = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(message)
    await channel.close()
    return messages


async def test_poison_is_parked_after_n_tries_and_healthy_throughput_holds(
    bus_factory: Any, sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    bus: EventBus = await bus_factory("reliability")
    channel = await bus.connection.channel(publisher_confirms=True)
    clean: list[Round] = []
    poisoned: list[Round] = []
    for n in range(ROUNDS):
        clean.append(await run_round(bus, channel, sessions, f"clean-{n}", with_poison=False))
        poisoned.append(await run_round(bus, channel, sessions, f"poison-{n}", with_poison=True))
    await channel.close()

    # Every healthy event had its effect once; no poison event had any.
    assert await count_effects(engine) == 2 * ROUNDS * HEALTHY_PER_ROUND
    assert await duplicate_effects(engine) == 0

    # The parked messages: exactly the poison events, with the attempt count and the reason.
    for n, result in enumerate(poisoned):
        dlq = f"{bus.queue_name(f'poison-{n}')}.dlq"
        messages = await parked(bus, dlq)
        assert sorted(m.message_id for m in messages) == sorted(str(i) for i in result.poison)
        assert {int(m.headers[HEADER_ATTEMPT]) for m in messages} == {TRIES}
        assert all("refers to something" in str(m.headers[HEADER_REASON]) for m in messages)
    channel = await bus.connection.channel()
    counts = await queue_counts(channel, bus.declared_queues)
    await channel.close()
    leftovers = {name: count for name, count in counts.items() if count != (0, 0)}
    assert not leftovers, f"messages or consumers left behind: {leftovers}"

    without = sum(r.healthy for r in clean) / sum(r.seconds for r in clean)
    with_ = sum(r.healthy for r in poisoned) / sum(r.seconds for r in poisoned)
    poison_total = sum(len(r.poison) for r in poisoned)
    ratio = with_ / without
    pairs = zip(clean, poisoned, strict=True)
    rounds = " ".join(f"{a.throughput:.0f}/{b.throughput:.0f}" for a, b in pairs)
    summary = (
        f"healthy throughput {without:.0f}/s without poison, {with_:.0f}/s with "
        f"{poison_total} poison events ({TRIES} tries each) mixed in: {ratio:.1%} "
        f"(rounds, without/with: {rounds})"
    )
    print(summary)
    assert ratio >= MIN_RATIO, summary
