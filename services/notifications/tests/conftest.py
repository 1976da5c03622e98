"""Fixtures: this run's migrated notifications database, the real broker and Redis, test tokens."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI

from notifications_service.cli import MIGRATIONS
from notifications_service.config import Settings
from notifications_service.main import create_app
from servicekit.migrations import upgrade
from servicekit.testing.plugin import Infra
from servicekit.testing.tokens import TokenMinter


@pytest.fixture(scope="session")
def refused_smtp_port() -> Iterator[int]:
    """A loopback port held bound but not listening: connecting to it is refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@pytest.fixture(scope="session")
def settings(
    database_factory: Callable[[str], str],
    infra: Infra,
    token_minter: TokenMinter,
    refused_smtp_port: int,
) -> Settings:
    url = database_factory("notifications")
    upgrade(script_location=MIGRATIONS, database_url=url)
    return Settings(
        environment="test",
        database_url=url,
        redis_url=infra.redis_url,
        amqp_url=infra.amqp_url,
        events_exchange=f"{infra.amqp_prefix}notifications.events",
        jwks_file=str(token_minter.jwks_path),
        jwks_url=None,
        retry_delays_ms=[200, 500, 1000],
        # Tests that send mail point this at their own SMTP sink; nothing listens here.
        smtp_port=refused_smtp_port,
        smtp_timeout_seconds=2.0,
        send_lease_seconds=5.0,
        send_retry_initial_seconds=0.1,
        send_retry_max_seconds=0.4,
        dispatch_poll_seconds=0.1,
        delivery_deadline_seconds=60.0,
        recipient_wait_seconds=60.0,
    )


@pytest.fixture
def app_factory() -> Callable[[Settings], FastAPI]:
    return create_app
