"""Liveness and readiness: named dependency checks run concurrently, each with a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit.logging import get_logger
from servicekit.redisclient import RedisClient

log = get_logger(__name__)

Check = Callable[[], Awaitable[None]]

OK = "ok"
_MAX_REASON = 200


@dataclass(frozen=True)
class _Entry:
    name: str
    check: Check
    critical: bool


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:_MAX_REASON]


class HealthRegistry:
    """The checks that decide whether this instance may receive traffic."""

    def __init__(self, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._entries: dict[str, _Entry] = {}

    def add(self, name: str, check: Check, *, critical: bool = True) -> None:
        """Register a check; a failing non-critical check is reported but keeps us ready."""
        self._entries[name] = _Entry(name, check, critical)

    async def _run_one(self, entry: _Entry) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                await entry.check()
        except TimeoutError:
            result = f"fail: timed out after {self.timeout:g}s"
        except Exception as exc:
            result = f"fail: {_reason(exc)}"
        else:
            return OK
        log.warning("health.check_failed", check=entry.name, result=result)
        return result

    async def run(self) -> tuple[bool, dict[str, str]]:
        """Run every check at once; ready means no critical check failed."""
        entries = list(self._entries.values())
        results = await asyncio.gather(*(self._run_one(entry) for entry in entries))
        checks = {entry.name: result for entry, result in zip(entries, results, strict=True)}
        ready = all(
            result == OK for entry, result in zip(entries, results, strict=True) if entry.critical
        )
        return ready, checks


def health_router(registry: HealthRegistry) -> APIRouter:
    """Serve ``GET /health/live`` and ``GET /health/ready`` (not in the OpenAPI schema)."""
    router = APIRouter(tags=["health"], include_in_schema=False)

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        is_ready, checks = await registry.run()
        body: dict[str, Any] = {"status": "ok" if is_ready else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if is_ready else 503)

    return router


def database_check(engine: AsyncEngine) -> Check:
    """Check that the database answers ``SELECT 1``."""

    async def check() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return check


def redis_check(redis: RedisClient) -> Check:
    """Check that Redis answers PING."""

    async def check() -> None:
        if not await redis.ping():
            raise ConnectionError("no PONG")

    return check


def broker_check(is_connected: Callable[[], bool]) -> Check:
    """Check that the broker connection is up."""

    async def check() -> None:
        if not is_connected():
            raise ConnectionError("not connected")

    return check
