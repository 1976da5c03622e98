"""Small helpers shared by the auth tests."""

from __future__ import annotations

import random
import statistics
import uuid
from collections.abc import Awaitable, Callable

import aio_pika

# Meets the policy and is in no list: tests that are not about passwords use it.
GOOD_PASSWORD = "violet-harbour-lantern-42"

# The ``register`` fixture: registers a fresh account, returns its JSON plus the password used.
Registrar = Callable[..., Awaitable[dict[str, str]]]


def new_email() -> str:
    """An email no other test (or run) uses."""
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def new_address() -> str:
    """A client address no other test is likely to use (for the per-address throttle)."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def p95(samples: list[float]) -> float:
    """The 95th percentile."""
    return statistics.quantiles(samples, n=20)[-1]


async def bind_sink(amqp_url: str, exchange: str, queue: str) -> None:
    """Bind a durable queue to every event on ``exchange``, standing in for auth's consumers."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        events = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        sink = await channel.declare_queue(
            queue, durable=True, arguments={"x-max-length": 10_000, "x-overflow": "drop-head"}
        )
        await sink.bind(events, routing_key="#")
