"""Readiness reports each dependency and turns 503 when a critical one is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from servicekit.health import (
    HealthRegistry,
    broker_check,
    database_check,
    health_router,
    redis_check,
)

LIVE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEAD_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"


async def healthy() -> None:
    return None


async def broken() -> None:
    raise ConnectionRefusedError("connection refused")


async def hanging() -> None:
    await asyncio.sleep(60)


def client_for(registry: HealthRegistry) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(health_router(registry))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


class TestHealthRegistry:
    async def test_all_checks_passing_is_ready(self) -> None:
        registry = HealthRegistry()
        registry.add("database", healthy)
        registry.add("broker", healthy)

        assert await registry.run() == (True, {"database": "ok", "broker": "ok"})

    async def test_a_failing_check_reports_its_reason(self) -> None:
        registry = HealthRegistry()
        registry.add("database", broken)
        registry.add("broker", healthy)

        ready, checks = await registry.run()

        assert not ready
        assert checks == {"database": "fail: connection refused", "broker": "ok"}

    async def test_a_hanging_check_times_out_without_holding_up_the_others(self) -> None:
        registry = HealthRegistry(timeout=0.05)
        registry.add("database", hanging)
        registry.add("redis", hanging)
        registry.add("broker", healthy)

        started = asyncio.get_running_loop().time()
        ready, checks = await registry.run()
        elapsed = asyncio.get_running_loop().time() - started

        assert not ready
        assert checks["database"] == "fail: timed out after 0.05s"
        assert checks["redis"] == "fail: timed out after 0.05s"
        assert checks["broker"] == "ok"
        assert elapsed < 1

    async def test_a_non_critical_failure_is_reported_but_keeps_ready(self) -> None:
        registry = HealthRegistry()
        registry.add("database", healthy)
        registry.add("cache", broken, critical=False)

        assert await registry.run() == (
            True,
            {"database": "ok", "cache": "fail: connection refused"},
        )

    async def test_a_long_error_message_is_shortened_to_one_line(self) -> None:
        async def noisy() -> None:
            raise RuntimeError("first line " + "x" * 500 + "\nsecond line")

        registry = HealthRegistry()
        registry.add("noisy", noisy)

        _, checks = await registry.run()

        assert checks["noisy"].startswith("fail: first line")
        assert "second line" not in checks["noisy"]
        assert len(checks["noisy"]) <= 210

    async def test_no_checks_is_ready(self) -> None:
        assert await HealthRegistry().run() == (True, {})


class TestHealthRouter:
    async def test_live_answers_while_dependencies_are_down(self) -> None:
        registry = HealthRegistry()
        registry.add("database", broken)
        async with client_for(registry) as client:
            response = await client.get("/health/live")

        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_ready_is_200_when_everything_answers(self) -> None:
        registry = HealthRegistry()
        registry.add("database", healthy)
        async with client_for(registry) as client:
            response = await client.get("/health/ready")

        assert response.status_code == 200
        assert response.json() == {"status": "ok", "checks": {"database": "ok"}}

    async def test_ready_is_503_naming_the_failing_dependency(self) -> None:
        registry = HealthRegistry()
        registry.add("database", broken)
        registry.add("broker", healthy)
        async with client_for(registry) as client:
            response = await client.get("/health/ready")

        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "checks": {"database": "fail: connection refused", "broker": "ok"},
        }

    async def test_health_endpoints_are_not_in_the_api_document(self) -> None:
        async with client_for(HealthRegistry()) as client:
            schema = (await client.get("/openapi.json")).json()

        assert not any(path.startswith("/health") for path in schema.get("paths", {}))


class TestBrokerCheck:
    async def test_connected_broker_is_ok(self) -> None:
        await broker_check(lambda: True)()

    async def test_disconnected_broker_fails(self) -> None:
        registry = HealthRegistry()
        registry.add("broker", broker_check(lambda: False))

        assert await registry.run() == (False, {"broker": "fail: not connected"})


@pytest.fixture
async def live_redis() -> AsyncIterator[Redis]:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


class TestRealDependencies:
    async def test_live_database_and_redis_are_ok(self, live_redis: Redis) -> None:
        engine = create_async_engine(LIVE_DATABASE)
        registry = HealthRegistry()
        registry.add("database", database_check(engine))
        registry.add("redis", redis_check(live_redis))
        try:
            result = await registry.run()
        finally:
            await engine.dispose()

        assert result == (True, {"database": "ok", "redis": "ok"})

    async def test_dead_database_and_redis_fail(self) -> None:
        engine = create_async_engine(DEAD_DATABASE)
        dead_redis = Redis.from_url("redis://127.0.0.1:1/0")
        registry = HealthRegistry()
        registry.add("database", database_check(engine))
        registry.add("redis", redis_check(dead_redis))
        try:
            ready, checks = await registry.run()
        finally:
            await engine.dispose()
            await dead_redis.aclose()

        assert not ready
        assert checks["database"].startswith("fail: ")
        assert "connect" in checks["database"].lower()
        assert checks["redis"].startswith("fail: ")
        assert "connect" in checks["redis"].lower()
