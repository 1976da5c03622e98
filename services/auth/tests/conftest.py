"""Fixtures: this run's migrated auth database, the real broker and Redis, auth's own keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from auth_service.cli import MIGRATIONS
from auth_service.config import Settings
from auth_service.main import create_app
from servicekit.migrations import upgrade
from servicekit.testing.plugin import Infra, serve_app
from tests.helpers import GOOD_PASSWORD, Registrar, bind_sink, new_email


@pytest.fixture(scope="session")
def settings(
    database_factory: Callable[[str], str], infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    url = database_factory("auth")
    exchange = f"{infra.amqp_prefix}auth.events"
    # Stands in for the services that consume auth's events in the real system: without a
    # bound queue the broker returns them and the outbox would keep retrying.
    asyncio.run(bind_sink(infra.amqp_url, exchange, f"{infra.amqp_prefix}auth.downstream"))
    upgrade(script_location=MIGRATIONS, database_url=url)
    return Settings(
        environment="test",
        database_url=url,
        redis_url=infra.redis_url,
        amqp_url=infra.amqp_url,
        events_exchange=exchange,
        # Auth verifies its own tokens from its key store, never from a URL or file.
        jwks_file=None,
        jwks_url=None,
        keys_dir=tmp_path_factory.mktemp("auth-keys"),
        rsa_key_bits=2048,
        keys_reload_seconds=0.1,
        retry_delays_ms=[200, 500, 1000],
        # Throttle counters of this run only; every test's requests come from 127.0.0.1, the
        # throttle tests use their own addresses and limits.
        redis_key_prefix=f"auth:{infra.run_id}",
        login_address_max_failures=1_000_000,
    )


@pytest.fixture
def app_factory() -> Callable[[Settings], FastAPI]:
    return create_app


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a running auth app (lifespan, broker, relay, consumers)."""
    async with serve_app(create_app(settings)) as client:
        yield client


@pytest.fixture
def register(client: httpx.AsyncClient) -> Registrar:
    """Register a fresh account; returns its JSON plus the password used."""

    async def create(
        email: str | None = None, password: str = GOOD_PASSWORD, name: str = "Test User"
    ) -> dict[str, str]:
        response = await client.post(
            "/auth/register",
            json={"email": email or new_email(), "password": password, "name": name},
        )
        assert response.status_code == 201, response.text
        return {**response.json(), "password": password}

    return create


@pytest.fixture
def keys_dir(settings: Settings) -> Path:
    return settings.keys_dir
