"""Fixtures of the integration tests: the running service, a payments stand-in, event capture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from orders_service.config import Settings
from orders_service.main import create_app
from servicekit.bus import EventBus
from servicekit.events import EventData, new_envelope
from servicekit.testing.capture import EventCapture
from servicekit.testing.plugin import Infra, serve_app
from servicekit.testing.tokens import TokenMinter
from tests.integration.support import Publish, Service, routable


@pytest.fixture
async def orders(
    settings: Settings, token_minter: TokenMinter, infra: Infra
) -> AsyncIterator[Service]:
    """The orders service running against this run's database, broker and Redis."""
    app = create_app(settings)
    async with serve_app(app) as client, routable(infra.amqp_url, settings.events_exchange):
        yield Service(app=app, client=client, minter=token_minter)


@pytest.fixture
def user_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
async def published(
    settings: Settings, capture_events: Callable[..., Awaitable[EventCapture]]
) -> EventCapture:
    """Everything the service publishes from now on (``order.*``)."""
    return await capture_events(settings.events_exchange, ["order.*"])


@pytest.fixture
async def publish(
    settings: Settings, bus_factory: Callable[..., Awaitable[EventBus]], orders: Service
) -> Publish:
    """Publish an event as another service would (after the service bound its queues)."""
    bus = await bus_factory("payments-gateway", exchange=settings.events_exchange)

    async def send(data: EventData) -> uuid.UUID:
        envelope = new_envelope(data, producer="payments-gateway")
        await bus.publish(envelope)
        return envelope.id

    return send
