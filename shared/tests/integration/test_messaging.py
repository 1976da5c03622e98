"""The delivery guarantees of SYSTEM.md, on the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.bus import (
    HEADER_ATTEMPT,
    HEADER_REASON,
    EventBus,
    ReceivedEvent,
    UnroutableError,
)
from servicekit.events import UserRegistered, new_envelope
from servicekit.outbox import Outbox, OutboxRelay
from servicekit.testing.plugin import close_connections
from servicekit.testing.waiting import wait_until

from .support import count_effects, inbox, outbox, record_effect

FAST_RETRIES = (200, 400, 800)


def user_event(name: str = "Ada") -> UserRegistered:
    return UserRegistered(
        user_id=uuid.uuid4(),
        email=f"{uuid.uuid4().hex[:8]}@example.com",
        name=name,
        registered_at=datetime.now(UTC),
    )


async def drain(bus: EventBus, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    channel = await bus.connection.channel()
    q = await channel.get_queue(queue, ensure=False)
    found = []
    while (msg := await q.get(no_ack=True, fail=False)) is not None:
        found.append(msg)
    await channel.close()
    return found


async def start_consumer(
    bus: EventBus,
    sessions: async_sessionmaker[AsyncSession],
    handler: Callable[[ReceivedEvent, AsyncSession], Awaitable[None]] = record_effect,
    **kwargs: Any,
) -> Any:
    consumer = bus.consumer(
        "effects",
        handlers={"user.registered": handler},
        session_factory=sessions,
        inbox=inbox,
        retry_delays_ms=kwargs.pop("retry_delays_ms", FAST_RETRIES),
        **kwargs,
    )
    await consumer.start()
    return consumer


class TestPublishConsume:
    async def test_round_trip_keeps_envelope_and_headers(
        self, bus_factory: Any, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        bus = await bus_factory("svc")
        received: list[ReceivedEvent] = []

        async def capture(event: ReceivedEvent, session: AsyncSession) -> None:
            received.append(event)

        await start_consumer(bus, sessions, capture)
        data = user_event("Grace")
        envelope = new_envelope(data, producer="auth", correlation_id="corr-123")
        traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        await bus.publish(envelope, traceparent=traceparent)

        async def arrived() -> bool:
            return len(received) == 1

        await wait_until(arrived, what="arrived")
        got = received[0]
        assert got.envelope == envelope
        assert got.data == data
        assert got.payload(UserRegistered).name == "Grace"
        # The same trace, continued by the publish span.
        assert got.headers["traceparent"].split("-")[1] == "a" * 32
        assert got.headers["x-correlation-id"] == "corr-123"
        assert got.attempt == 1

    async def test_amqp_properties(self, bus_factory: Any) -> None:
        bus = await bus_factory("svc")
        channel = await bus.connection.channel()
        exchange = await channel.get_exchange(bus.exchange_name)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "user.registered")
        envelope = new_envelope(user_event(), producer="auth")
        await bus.publish(envelope)
        msg = await _get_one(queue)
        assert msg.message_id == str(envelope.id)
        assert msg.type == "user.registered"
        assert msg.content_type == "application/json"
        assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert msg.headers["x-correlation-id"] == envelope.correlation_id
        assert str(msg.headers["traceparent"]).startswith("00-")
        assert orjson.loads(msg.body)["id"] == str(envelope.id)
        await channel.close()

    async def test_publishing_an_unbound_routing_key_raises(self, bus_factory: Any) -> None:
        bus = await bus_factory("svc")
        with pytest.raises(UnroutableError):
            await bus.publish(new_envelope(user_event(), producer="auth"))


class TestExactlyOnceEffects:
    async def test_same_message_twice_has_one_effect(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine
    ) -> None:
        bus = await bus_factory("svc")
        await start_consumer(bus, sessions)
        envelope = new_envelope(user_event(), producer="auth")
        await bus.publish(envelope)
        await bus.publish(envelope)
        other = new_envelope(user_event(), producer="auth")
        await bus.publish(other)

        async def both_done() -> bool:
            return await count_effects(engine) == 2

        await wait_until(both_done, what="both done")
        await asyncio.sleep(0.3)
        assert await count_effects(engine, envelope.id) == 1

    async def test_relay_stopped_between_commit_and_publish(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine, producer_outbox: Outbox
    ) -> None:
        producer = await bus_factory("producer")
        consumer_bus = await bus_factory("consumer")
        await start_consumer(consumer_bus, sessions)
        async with sessions() as session, session.begin():
            envelope = await producer_outbox.add(session, user_event())
        # Committed, nothing published yet: the relay is not running (as after a crash).
        await asyncio.sleep(0.3)
        assert await count_effects(engine) == 0

        relay = OutboxRelay(engine=engine, table=outbox, publish=producer.publish_raw)
        await relay.start()

        async def applied() -> bool:
            return await count_effects(engine, envelope.id) == 1

        await wait_until(applied, what="applied")
        await relay.stop()
        assert await relay.backlog() == (0, 0.0)

    async def test_crash_after_publish_before_mark_publishes_again_but_applies_once(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine, producer_outbox: Outbox
    ) -> None:
        producer = await bus_factory("producer")
        consumer_bus = await bus_factory("consumer")
        await start_consumer(consumer_bus, sessions)
        async with sessions() as session, session.begin():
            envelope = await producer_outbox.add(session, user_event())

        sent: list[str] = []

        async def publish_then_crash(body: bytes, **kw: Any) -> None:
            await producer.publish_raw(body, **kw)
            sent.append(kw["message_id"])
            raise ConnectionResetError("relay died before marking the row")

        crashing = OutboxRelay(engine=engine, table=outbox, publish=publish_then_crash)
        with pytest.raises(ConnectionResetError):
            await crashing.publish_pending()
        assert (await crashing.backlog())[0] == 1  # still pending

        relay = OutboxRelay(engine=engine, table=outbox, publish=producer.publish_raw)

        async def republished() -> bool:
            # The failed row waits out its backoff (a second) before it is tried again.
            return await relay.publish_pending() == 1

        await wait_until(republished, timeout=5, what="republished")
        assert sent == [str(envelope.id)]

        async def applied() -> bool:
            return await count_effects(engine, envelope.id) == 1

        await wait_until(applied, what="applied")
        await asyncio.sleep(0.5)  # the second copy has arrived and been ignored
        assert await count_effects(engine, envelope.id) == 1

    async def test_relay_is_woken_at_commit(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine, producer_outbox: Outbox
    ) -> None:
        producer = await bus_factory("producer")
        consumer_bus = await bus_factory("consumer")
        await start_consumer(consumer_bus, sessions)
        # A long poll interval: only NOTIFY can explain a fast delivery.
        relay = OutboxRelay(
            engine=engine, table=outbox, publish=producer.publish_raw, poll_interval=30
        )
        await relay.start()
        await asyncio.sleep(0.2)
        async with sessions() as session, session.begin():
            envelope = await producer_outbox.add(session, user_event())
        committed = time.monotonic()

        async def applied() -> bool:
            return await count_effects(engine, envelope.id) == 1

        await wait_until(applied, timeout=5, what="applied")
        assert time.monotonic() - committed < 2.0
        await relay.stop()

    async def test_rolled_back_transaction_publishes_nothing(
        self, sessions: Any, engine: AsyncEngine, producer_outbox: Outbox
    ) -> None:
        async with sessions() as session, session.begin():
            await producer_outbox.add(session, user_event())
            await session.rollback()
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(outbox))).scalar() == 0

    async def test_two_relays_publish_each_row_once(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine, producer_outbox: Outbox
    ) -> None:
        producer = await bus_factory("producer")
        channel = await producer.connection.channel()
        exchange = await channel.get_exchange(producer.exchange_name)
        raw = await channel.declare_queue(exclusive=True)
        await raw.bind(exchange, "user.registered")

        total = 300
        async with sessions() as session, session.begin():
            for i in range(total):
                await producer_outbox.add(session, user_event(f"user {i}"))

        relays = [
            OutboxRelay(engine=engine, table=outbox, publish=producer.publish_raw, batch_size=20)
            for _ in range(2)
        ]
        await asyncio.gather(*(r.start() for r in relays))
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while len(seen) < total and time.monotonic() < deadline:
            msg = await raw.get(no_ack=True, fail=False)
            if msg is None:
                await asyncio.sleep(0.02)
                continue
            seen.append(str(msg.message_id))
        await asyncio.sleep(0.5)
        while (msg := await raw.get(no_ack=True, fail=False)) is not None:
            seen.append(str(msg.message_id))
        await asyncio.gather(*(r.stop() for r in relays))
        assert len(seen) == total
        assert len(set(seen)) == total
        assert all(r.published_total > 0 for r in relays), "both relays took part"
        await channel.close()


class TestFailures:
    async def test_failing_handler_retries_with_growing_delays_then_parks(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine
    ) -> None:
        bus = await bus_factory("svc")
        attempts: dict[str, list[float]] = {}
        poison_name = "poison"

        async def flaky(event: ReceivedEvent, session: AsyncSession) -> None:
            data = event.payload(UserRegistered)
            if data.name == poison_name:
                attempts.setdefault(str(event.envelope.id), []).append(time.monotonic())
                raise ValueError("cannot process this one")
            await record_effect(event, session)

        consumer = await start_consumer(bus, sessions, flaky)
        poison = new_envelope(user_event(poison_name), producer="auth")
        await bus.publish(poison)
        healthy = [new_envelope(user_event(f"ok {i}"), producer="auth") for i in range(20)]
        for envelope in healthy:
            await bus.publish(envelope)

        async def healthy_done() -> bool:
            return await count_effects(engine) == len(healthy)

        await wait_until(healthy_done, timeout=5, what="healthy done")
        # The poison message is still being retried: the healthy ones did not wait for it.
        assert len(attempts[str(poison.id)]) < 4

        async def parked() -> bool:
            return len(attempts.get(str(poison.id), [])) == 4

        await wait_until(parked, timeout=10, what="parked")
        await asyncio.sleep(0.3)
        times = attempts[str(poison.id)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 0.18
        assert gaps[1] >= 0.38
        assert gaps[2] >= 0.78
        assert gaps[0] < gaps[1] < gaps[2]

        dead = await drain(bus, consumer.dlq_name)
        assert [m.message_id for m in dead] == [str(poison.id)]
        assert "cannot process this one" in str(dead[0].headers[HEADER_REASON])
        assert int(dead[0].headers[HEADER_ATTEMPT]) == 4  # type: ignore[call-overload]
        assert await count_effects(engine, poison.id) == 0

    async def test_malformed_message_is_parked_at_once_and_queue_flows(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine
    ) -> None:
        bus = await bus_factory("svc")
        consumer = await start_consumer(bus, sessions)
        for body in (b"{not json", b'{"id": "x"}', b"[1, 2]"):
            await bus.publish_raw(
                body,
                routing_key="user.registered",
                message_id=str(uuid.uuid4()),
                event_type="user.registered",
                headers={},
            )
        bad_data = new_envelope(user_event(), producer="auth").model_dump(mode="json")
        bad_data["data"] = {"user_id": "not-a-uuid"}
        await bus.publish_raw(
            orjson.dumps(bad_data),
            routing_key="user.registered",
            message_id=bad_data["id"],
            event_type="user.registered",
            headers={},
        )
        good = new_envelope(user_event(), producer="auth")
        await bus.publish(good)

        async def good_done() -> bool:
            return await count_effects(engine, good.id) == 1

        await wait_until(good_done, timeout=5, what="good done")

        async def all_parked() -> bool:
            return len(await drain_keep(bus, consumer.dlq_name)) == 4

        await wait_until(all_parked, timeout=5, what="all parked")
        dead = await drain(bus, consumer.dlq_name)
        reasons = [str(m.headers[HEADER_REASON]) for m in dead]
        assert all(r.startswith("malformed") for r in reasons)
        assert all(int(m.headers[HEADER_ATTEMPT]) == 1 for m in dead)  # type: ignore[call-overload]

    async def test_connections_dropped_mid_stream_nothing_lost(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine, producer_outbox: Outbox
    ) -> None:
        producer = await bus_factory("producer")
        consumer_bus = await bus_factory("consumer")
        await start_consumer(consumer_bus, sessions)
        relay = OutboxRelay(
            engine=engine, table=outbox, publish=producer.publish_raw, poll_interval=0.2
        )
        await relay.start()
        total = 200
        ids = []
        for i in range(total):
            async with sessions() as session, session.begin():
                ids.append((await producer_outbox.add(session, user_event(f"u{i}"))).id)
            if i == total // 2:
                # Both of this test's connections (its exchange is in their names), as
                # close_all_connections would, without touching other runs on the broker.
                assert close_connections(producer.exchange_name, "test: dropped on purpose") == 2

        async def all_applied() -> bool:
            return await count_effects(engine) >= total

        await wait_until(all_applied, timeout=60, what="all applied")
        await asyncio.sleep(1)
        assert await count_effects(engine) == total
        for event_id in ids[:: total // 10]:
            assert await count_effects(engine, event_id) == 1
        await relay.stop()
        assert (await relay.backlog())[0] == 0


async def drain_keep(bus: EventBus, queue: str) -> list[Any]:
    """Peek at a queue's messages without removing them."""
    channel = await bus.connection.channel()
    q = await channel.get_queue(queue, ensure=False)
    msgs = []
    while (msg := await q.get(no_ack=False, fail=False)) is not None:
        msgs.append(msg)
    await channel.close()  # unacked messages go back
    return msgs


async def _get_one(queue: aio_pika.abc.AbstractQueue) -> Any:
    for _ in range(100):
        msg = await queue.get(no_ack=True, fail=False)
        if msg is not None:
            return msg
        await asyncio.sleep(0.05)
    raise AssertionError("no message arrived")


class TestOutboxBackoff:
    async def test_an_unroutable_event_does_not_hold_back_the_rows_behind_it(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine, producer_outbox: Outbox
    ) -> None:
        from servicekit.events import PaymentFailed

        producer = await bus_factory("producer")
        consumer_bus = await bus_factory("consumer")
        await start_consumer(consumer_bus, sessions)
        relay = OutboxRelay(engine=engine, table=outbox, publish=producer.publish_raw, batch_size=5)
        async with sessions() as session, session.begin():
            # A batch's worth of events nobody consumes yet, then one that has a consumer.
            for _ in range(5):
                await producer_outbox.add(
                    session,
                    PaymentFailed(
                        payment_id=uuid.uuid4(),
                        order_id=uuid.uuid4(),
                        user_id=uuid.uuid4(),
                        amount="1.00",
                        currency="USD",
                        reason="declined",
                    ),
                )
            behind = await producer_outbox.add(session, user_event())
        await relay.start()

        async def applied() -> bool:
            return await count_effects(engine, behind.id) == 1

        await wait_until(applied, timeout=10, what="applied")
        await relay.stop(flush_timeout=0)
        pending, _ = await relay.backlog()
        assert pending == 5  # kept, to be published once a queue is bound
