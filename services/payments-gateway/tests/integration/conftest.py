"""Fixtures: a running payments-gateway with its own provider simulator and exchange.

Each stack gets its own exchange, so messages a test leaves behind (deferred payments of an
outage) never reach another test's service or simulator.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from payments_gateway.config import Settings
from payments_gateway.main import create_app
from servicekit.testing.serving import loopback_socket, serving
from servicekit.testing.tokens import TokenMinter
from svctools import simulator
from tests.integration.stack import WEBHOOK_PATH, Stack, StackFactory

# Lifespan failures fail the test; shutdown waits at most 5 s for in-flight requests.
SERVER_CONFIG = {"lifespan": "on", "timeout_graceful_shutdown": 5}


@pytest.fixture
def start_stack(
    settings: Settings,
    exchange_name: str,
    bus_factory: Callable[..., Any],
    capture_events: Callable[..., Any],
    token_minter: TokenMinter,
) -> StackFactory:
    """``async with start_stack(**setting_overrides) as stack``; webhooks=False stops them."""

    @contextlib.asynccontextmanager
    async def start(
        *, webhooks: bool = True, pending_delay: float = 0.5, **overrides: Any
    ) -> AsyncIterator[Stack]:
        # Bound before the apps are built, so each can be told the other's address.
        provider_sock, service_sock = loopback_socket(), loopback_socket()
        provider_url = f"http://127.0.0.1:{provider_sock.getsockname()[1]}"
        service_url = f"http://127.0.0.1:{service_sock.getsockname()[1]}"
        service_settings = settings.model_copy(
            update={"events_exchange": exchange_name, "provider_url": provider_url, **overrides}
        )
        provider_app = simulator.create_app(
            webhook_url=f"{service_url}{WEBHOOK_PATH}" if webhooks else None,
            webhook_secret=service_settings.webhook_secret.get_secret_value(),
            pending_delay=pending_delay,
        )
        async with (
            serving(provider_app, provider_sock, lifespan="on", timeout_graceful_shutdown=5),
            serving(
                create_app(service_settings),
                service_sock,
                lifespan="on",
                timeout_graceful_shutdown=5,
            ),
            httpx.AsyncClient(base_url=service_url, timeout=10) as api,
            httpx.AsyncClient(base_url=provider_url, timeout=10) as provider,
        ):
            events = await capture_events(exchange_name, ["payment.*"])
            orders_bus = await bus_factory("orders", exchange=exchange_name)
            yield Stack(
                settings=service_settings,
                api=api,
                provider=provider,
                orders_bus=orders_bus,
                events=events,
                tokens=token_minter,
            )

    return start


@pytest.fixture
async def stack(start_stack: StackFactory) -> AsyncIterator[Stack]:
    """A stack with the test settings."""
    async with start_stack() as running:
        yield running
