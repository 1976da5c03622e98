"""P4: completed orders per second against raw aio-pika publish+consume on the same broker.

The baseline is what the broker and aio-pika alone can move with the delivery guarantees the
system uses: persistent messages of an event's size, publisher confirms (awaited a window at a
time, as the outbox relay does), a durable quorum queue, a consumer with the services' prefetch
(32) acknowledging each message. The measured side is the whole saga: ``POST /orders`` through
the gateway until the order is confirmed, its payment succeeded and its confirmation email is
recorded by notifications, each in its own service and database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import aio_pika
import asyncpg

from bench.http_bench import Account
from bench.loadgen import RawHttp
from bench.procs import say

RAW_PREFETCH = 32
RAW_WINDOW = 100
RAW_BODY = b'{"padding": "' + b"x" * 600 + b'"}'  # about one event envelope


@dataclass(frozen=True)
class RawRun:
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


async def raw_publish_consume(amqp_url: str, queue_name: str, *, seconds: float) -> RawRun:
    """Publish for ``seconds`` (confirmed, persistent) while consuming; rate until drained."""
    publisher = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": f"bench-raw-publisher@{queue_name}"}
    )
    consumer = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": f"bench-raw-consumer@{queue_name}"}
    )
    try:
        pub_channel = await publisher.channel(publisher_confirms=True)
        con_channel = await consumer.channel()
        await con_channel.set_qos(prefetch_count=RAW_PREFETCH)
        queue = await con_channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.purge()
        received = 0
        published = 0
        done = asyncio.Event()
        last = 0.0
        publishing = True

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received, last
            await message.ack()
            received += 1
            last = time.perf_counter()
            if not publishing and received >= published:
                done.set()

        tag = await queue.consume(on_message)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            await asyncio.gather(
                *(
                    pub_channel.default_exchange.publish(
                        aio_pika.Message(
                            RAW_BODY,
                            message_id=str(uuid.uuid4()),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue_name,
                    )
                    for _ in range(RAW_WINDOW)
                )
            )
            published += RAW_WINDOW
        publishing = False
        if received >= published:
            done.set()
        await asyncio.wait_for(done.wait(), timeout=120)
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        return RawRun(received, last - started)
    finally:
        await publisher.close()
        await consumer.close()


@dataclass(frozen=True)
class OrdersRun:
    completed: int
    seconds: float
    post_seconds: float

    @property
    def rate(self) -> float:
        return self.completed / self.seconds


ORDER_BODY = {
    "items": [{"sku": "BENCH-1", "quantity": 2, "unit_price": "10.50"}],
    "currency": "USD",
    "payment_token": "tok_visa",
}


class _Progress:
    """How far a user's orders got, read from the three databases over connections kept open.

    (Connecting per poll forked three PostgreSQL backends ten times a second: load the
    measurement added to what it measured.)
    """

    def __init__(self, connections: dict[str, asyncpg.Connection]) -> None:
        self.connections = connections

    @classmethod
    async def open(cls, dsns: dict[str, str]) -> _Progress:
        names = ("orders", "payments", "notifications")
        connections = await asyncio.gather(*(asyncpg.connect(dsns[name]) for name in names))
        return cls(dict(zip(names, connections, strict=True)))

    async def close(self) -> None:
        await asyncio.gather(*(conn.close() for conn in self.connections.values()))

    async def counts(self, user_id: uuid.UUID) -> tuple[int, int, int, float | None]:
        confirmed = await self.connections["orders"].fetchval(
            "SELECT count(*) FROM orders WHERE user_id = $1 AND status = 'confirmed'", user_id
        )
        succeeded = await self.connections["payments"].fetchval(
            "SELECT count(*) FROM payments WHERE user_id = $1 AND status = 'succeeded'", user_id
        )
        row = await self.connections["notifications"].fetchrow(
            "SELECT count(*), extract(epoch FROM max(created_at)) FROM notifications "
            "WHERE user_id = $1 AND event_type = 'order.confirmed'",
            user_id,
        )
        return int(confirmed), int(succeeded), int(row[0]), float(row[1]) if row[1] else None


async def completed_orders(
    gateway: str, account: Account, dsns: dict[str, str], *, orders: int, concurrency: int
) -> OrdersRun:
    """POST ``orders`` orders (``concurrency`` at a time) and wait until every one completed."""
    user_id = uuid.UUID(account.user_id)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(orders):
        queue.put_nowait(index)
    failures: list[str] = []
    # The minimal client: httpx cost the bench about 2 ms of CPU per order, on the two cores the
    # services it measures share.
    client = RawHttp(gateway)

    async def poster() -> None:
        while not queue.empty():
            queue.get_nowait()
            status = await client.request(
                "POST", "/orders", headers=account.auth, json_body=ORDER_BODY
            )
            if status != 201:
                failures.append(f"HTTP {status}")

    try:
        started = time.time()
        await asyncio.gather(*(poster() for _ in range(concurrency)))
        posted = time.time()
    finally:
        await client.close()
    if failures:
        raise RuntimeError(f"{len(failures)} orders were refused, e.g. {failures[0]}")
    progress = await _Progress.open(dsns)
    deadline = time.monotonic() + 180
    try:
        while True:
            confirmed, succeeded, notified, last = await progress.counts(user_id)
            if min(confirmed, succeeded, notified) >= orders and last is not None:
                return OrdersRun(orders, last - started, posted - started)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"after 180 s only {confirmed} confirmed, {succeeded} paid, {notified} "
                    f"notified of {orders} orders"
                )
            await asyncio.sleep(0.1)
    finally:
        await progress.close()


def measure(
    *,
    amqp_url: str,
    raw_queue: str,
    gateway: str,
    accounts: list[Account],
    dsns: dict[str, str],
    raw_seconds: float,
    orders: int,
    concurrency: int,
) -> tuple[list[RawRun], list[OrdersRun]]:
    """Interleaved: per repetition the raw broker run, then a batch of orders (one account each)."""
    raws: list[RawRun] = []
    runs: list[OrdersRun] = []
    reps = len(accounts)
    for rep, account in enumerate(accounts, start=1):
        raw = asyncio.run(raw_publish_consume(amqp_url, raw_queue, seconds=raw_seconds))
        raws.append(raw)
        say(f"  run {rep}/{reps} raw aio-pika: {raw.rate:,.0f} messages/s ({raw.messages})")
        run = asyncio.run(
            completed_orders(gateway, account, dsns, orders=orders, concurrency=concurrency)
        )
        runs.append(run)
        say(
            f"  run {rep}/{reps} orders: {run.rate:,.1f} completed/s ({run.completed} in "
            f"{run.seconds:.1f} s; posted in {run.post_seconds:.1f} s)"
        )
    return raws, runs
