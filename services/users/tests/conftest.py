"""Fixtures: this run's migrated users database, the real broker and Redis, test tokens."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI

from servicekit.migrations import upgrade
from servicekit.testing.plugin import Infra
from servicekit.testing.tokens import TokenMinter
from users_service.cli import MIGRATIONS
from users_service.config import Settings
from users_service.main import create_app


@pytest.fixture(scope="session")
def settings(
    database_factory: Callable[[str], str], infra: Infra, token_minter: TokenMinter
) -> Settings:
    url = database_factory("users")
    upgrade(script_location=MIGRATIONS, database_url=url)
    return Settings(
        environment="test",
        database_url=url,
        redis_url=infra.redis_url,
        amqp_url=infra.amqp_url,
        events_exchange=f"{infra.amqp_prefix}users.events",
        jwks_file=str(token_minter.jwks_path),
        jwks_url=None,
        retry_delays_ms=[200, 500, 1000],
    )


@pytest.fixture
def app_factory() -> Callable[[Settings], FastAPI]:
    return create_app
