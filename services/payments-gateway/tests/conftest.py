"""Fixtures: this run's migrated payments database, the real broker and Redis, tokens."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI

from payments_gateway.cli import MIGRATIONS
from payments_gateway.config import Settings
from payments_gateway.main import create_app
from servicekit.migrations import upgrade
from servicekit.testing.plugin import Infra
from servicekit.testing.tokens import TokenMinter


@pytest.fixture(scope="session")
def settings(
    database_factory: Callable[[str], str], infra: Infra, token_minter: TokenMinter
) -> Settings:
    url = database_factory("payments")
    upgrade(script_location=MIGRATIONS, database_url=url)
    return Settings(
        environment="test",
        database_url=url,
        redis_url=infra.redis_url,
        amqp_url=infra.amqp_url,
        events_exchange=f"{infra.amqp_prefix}payments.events",
        jwks_file=str(token_minter.jwks_path),
        jwks_url=None,
        retry_delays_ms=[200, 500, 1000],
        webhook_secret="whsec_test_only",
        # Short pauses so that retries, deferrals and the breaker's recovery take seconds.
        provider_backoff_initial=0.05,
        provider_backoff_max=0.2,
        provider_read_timeout=3.0,
        provider_defer_seconds=0.5,
        breaker_failure_threshold=3,
        breaker_reset_seconds=1.0,
        refund_wait_seconds=10.0,
    )


@pytest.fixture
def app_factory() -> Callable[[Settings], FastAPI]:
    return create_app
