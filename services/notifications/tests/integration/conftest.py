"""The running service against real servers: PostgreSQL, RabbitMQ, Redis and an SMTP sink."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from notifications_service.config import Settings
from notifications_service.main import create_app
from servicekit.bus import EventBus
from servicekit.testing.plugin import serve_app
from servicekit.testing.tokens import TokenMinter
from svctools.smtp_sink import SmtpSink  # type: ignore[import-untyped]

from .support import Shop, StartShop


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    """A real SMTP server on a free loopback port, storing mail under tmp_path."""
    async with SmtpSink(port=0, maildir=tmp_path / "mail") as running:
        yield running


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A direct connection to the service's database, to check what it stores."""
    db = create_async_engine(settings.database_url)
    yield db
    await db.dispose()


@pytest.fixture
async def start_shop(
    settings: Settings,
    sink: SmtpSink,
    bus_factory: Callable[..., Awaitable[EventBus]],
    token_minter: TokenMinter,
    engine: AsyncEngine,
) -> AsyncIterator[StartShop]:
    """Start the service sending to ``sink``, with setting overrides; stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Shop:
            configured = settings.model_copy(update={"smtp_port": sink.port, **overrides})
            client = await stack.enter_async_context(serve_app(create_app(configured)))
            bus = await bus_factory("test", exchange=configured.events_exchange)
            return Shop(
                client=client,
                bus=bus,
                settings=configured,
                tokens=token_minter,
                engine=engine,
                maildir=sink.maildir,
            )

        yield start


@pytest.fixture
async def shop(start_shop: StartShop) -> Shop:
    """The service with the test settings."""
    return await start_shop()
