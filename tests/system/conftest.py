"""The order flow's three services in one process, on this run's databases and one exchange.

orders, payments-gateway and notifications are served in-process (their full lifespans: engines,
broker, outbox relays, consumers), the provider simulator by uvicorn on a free port and an SMTP
sink on another, so one in-memory span exporter sees every span of the flow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from notifications_service.cli import MIGRATIONS as NOTIFICATIONS_MIGRATIONS
from notifications_service.config import Settings as NotificationsSettings
from notifications_service.main import create_app as create_notifications
from orders_service.cli import MIGRATIONS as ORDERS_MIGRATIONS
from orders_service.config import Settings as OrdersSettings
from orders_service.main import create_app as create_orders
from payments_gateway.cli import MIGRATIONS as PAYMENTS_MIGRATIONS
from payments_gateway.config import Settings as PaymentsSettings
from payments_gateway.main import create_app as create_payments
from servicekit import tracecontext
from servicekit.logging import reset_logging
from servicekit.migrations import upgrade
from servicekit.testing.plugin import Infra, serve_app
from servicekit.testing.serving import serving
from servicekit.testing.tokens import TokenMinter
from svctools import simulator
from svctools.smtp_sink import SmtpSink

from .support import FAST_RETRIES, WEBHOOK_SECRET, Databases, OrderFlow


@pytest.fixture(scope="session")
def databases(database_factory: Callable[[str], str]) -> Databases:
    urls = {}
    for name, migrations in (
        ("orders", ORDERS_MIGRATIONS),
        ("payments", PAYMENTS_MIGRATIONS),
        ("notifications", NOTIFICATIONS_MIGRATIONS),
    ):
        urls[name] = database_factory(f"system_{name}")
        upgrade(script_location=migrations, database_url=urls[name])
    return Databases(**urls)


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """Every span finished during the test, from any of the services."""
    tracecontext.configure_tracing("system-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), f"not an SDK tracer provider: {provider!r}"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    # A processor cannot be removed from the provider; a shut-down exporter keeps nothing.
    exporter.shutdown()


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    async with SmtpSink(port=0, maildir=tmp_path / "mail") as running:
        yield running


@pytest.fixture
async def provider_url() -> AsyncIterator[str]:
    """The provider simulator (charges settle at once; no webhooks are needed)."""
    app = simulator.create_app(webhook_url=None, webhook_secret=WEBHOOK_SECRET)
    async with serving(app) as url:
        yield url


@pytest.fixture
async def order_flow(
    infra: Infra,
    databases: Databases,
    token_minter: TokenMinter,
    provider_url: str,
    sink: SmtpSink,
    span_exporter: InMemorySpanExporter,
) -> AsyncIterator[OrderFlow]:
    exchange = f"{infra.amqp_prefix}trace.events"
    common = {
        "environment": "test",
        "redis_url": infra.redis_url,
        "amqp_url": infra.amqp_url,
        "events_exchange": exchange,
        "jwks_file": str(token_minter.jwks_path),
        "jwks_url": None,
        "retry_delays_ms": FAST_RETRIES,
        "log_json": True,
    }
    orders = create_orders(OrdersSettings(database_url=databases.orders, **common))
    payments = create_payments(
        PaymentsSettings(
            database_url=databases.payments,
            provider_url=provider_url,
            webhook_secret=WEBHOOK_SECRET,
            provider_backoff_initial=0.05,
            provider_backoff_max=0.2,
            provider_defer_seconds=0.5,
            **common,
        )
    )
    notifications = create_notifications(
        NotificationsSettings(
            database_url=databases.notifications,
            smtp_port=sink.port,
            smtp_timeout_seconds=2.0,
            send_lease_seconds=5.0,
            send_retry_initial_seconds=0.1,
            send_retry_max_seconds=0.4,
            dispatch_poll_seconds=0.1,
            **common,
        )
    )
    try:
        async with (
            serve_app(notifications) as notifications_client,
            serve_app(payments) as payments_client,
            serve_app(orders) as orders_client,
        ):
            yield OrderFlow(exchange, orders_client, payments_client, notifications_client, sink)
    finally:
        reset_logging()
