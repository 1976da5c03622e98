"""Fixtures: this run's migrated users database, the real broker and Redis, test tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import pytest
from fastapi import FastAPI

from servicekit.migrations import upgrade
from servicekit.testing.plugin import Infra
from servicekit.testing.tokens import TokenMinter
from users_service.cli import MIGRATIONS
from users_service.config import Settings
from users_service.main import create_app


async def _bind_sink(infra: Infra, exchange: str) -> None:
    # In the running system other services consume user.updated / user.deleted; here nothing
    # would, and the relay's mandatory publish would keep failing. This bounded queue stands in
    # for them (deleted with the run's other queues by its name prefix).
    connection = await aio_pika.connect(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(
            f"{infra.amqp_prefix}users.test-sink",
            arguments={"x-max-length": 1000, "x-overflow": "drop-head"},
        )
        await queue.bind(ex, routing_key="user.*")


@pytest.fixture(scope="session")
def settings(
    database_factory: Callable[[str], str], infra: Infra, token_minter: TokenMinter
) -> Settings:
    url = database_factory("users")
    upgrade(script_location=MIGRATIONS, database_url=url)
    exchange = f"{infra.amqp_prefix}users.events"
    asyncio.run(_bind_sink(infra, exchange))
    return Settings(
        environment="test",
        database_url=url,
        redis_url=infra.redis_url,
        amqp_url=infra.amqp_url,
        events_exchange=exchange,
        jwks_file=str(token_minter.jwks_path),
        jwks_url=None,
        retry_delays_ms=[200, 500, 1000],
        # The test machine is shared and its event loop can stall for longer than production's
        # 0.5 s budget; the cache would then (correctly) fall back to the database and make
        # query-count assertions flaky. A dead Redis still fails at once (connection refused).
        redis_timeout_ms=3000,
    )


@pytest.fixture
def app_factory() -> Callable[[Settings], FastAPI]:
    return create_app
