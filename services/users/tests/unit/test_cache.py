"""UserCache's own logic, with Redis unreachable (a client for a closed port, no server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from servicekit.breaker import CircuitBreaker, State
from servicekit.redisclient import create_redis
from users_service.cache import UserCache
from users_service.schemas import UserRead


def profile(user_id: uuid.UUID, name: str) -> UserRead:
    now = datetime.now(UTC)
    return UserRead(
        id=user_id,
        email="a@example.com",
        name=name,
        bio=None,
        roles=[],
        created_at=now,
        updated_at=now,
    )


class SlowDatabase:
    """A loader that counts its calls and answers when released."""

    def __init__(self, name: str = "Ada") -> None:
        self.name = name
        self.calls = 0
        self.release = asyncio.Event()

    async def load(self, user_id: uuid.UUID) -> UserRead | None:
        self.calls += 1
        await self.release.wait()
        return profile(user_id, self.name)


def bypassed_lookups() -> float:
    return REGISTRY.get_sample_value("users_cache_lookups_total", {"result": "bypass"}) or 0.0


@pytest.fixture
async def cache() -> AsyncIterator[UserCache]:
    redis = create_redis("redis://127.0.0.1:1/0", timeout=0.2)
    breaker = CircuitBreaker("test-cache", failure_threshold=3, reset_timeout=60)
    cache = UserCache(redis, breaker=breaker)
    yield cache
    await cache.close()
    await redis.aclose()


class TestUserCacheWithoutRedis:
    async def test_concurrent_misses_share_one_database_read(self, cache: UserCache) -> None:
        database = SlowDatabase()
        user_id = uuid.uuid4()

        bypassed = bypassed_lookups()
        readers = [asyncio.create_task(cache.get(user_id, database.load)) for _ in range(50)]
        async with asyncio.timeout(10):  # every reader found Redis down and joined a load
            while bypassed_lookups() - bypassed < 50:
                await asyncio.sleep(0.01)
        database.release.set()
        results = await asyncio.gather(*readers)

        assert database.calls == 1
        assert {r.user.name for r in results if r is not None} == {"Ada"}

    async def test_reads_after_an_invalidation_do_not_join_an_older_read(
        self, cache: UserCache
    ) -> None:
        user_id = uuid.uuid4()
        old, new = SlowDatabase("Old"), SlowDatabase("New")
        new.release.set()
        before = asyncio.create_task(cache.get(user_id, old.load))
        async with asyncio.timeout(10):  # it is reading the database
            while old.calls == 0:
                await asyncio.sleep(0.01)

        await cache.invalidate([user_id])
        after = await asyncio.wait_for(cache.get(user_id, new.load), timeout=2)
        old.release.set()

        assert after is not None
        assert after.user.name == "New"
        assert (await before) is not None
        assert (old.calls, new.calls) == (1, 1)

    async def test_a_failing_load_fails_every_waiting_reader_and_the_next_one_retries(
        self, cache: UserCache
    ) -> None:
        user_id = uuid.uuid4()
        calls = 0

        async def broken(_: uuid.UUID) -> UserRead | None:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.02)
            raise ConnectionRefusedError("database down")

        results = await asyncio.gather(
            *(cache.get(user_id, broken) for _ in range(5)), return_exceptions=True
        )
        with pytest.raises(ConnectionRefusedError):
            await cache.get(user_id, broken)

        assert all(isinstance(r, ConnectionRefusedError) for r in results)
        assert calls == 2

    async def test_after_a_few_failures_redis_is_skipped(self, cache: UserCache) -> None:
        database = SlowDatabase()
        database.release.set()

        for _ in range(5):
            assert await cache.get(uuid.uuid4(), database.load) is not None

        assert cache.breaker.state is State.OPEN
        assert database.calls == 5

    async def test_a_failed_invalidation_is_retried_in_the_background_until_closed(
        self, cache: UserCache
    ) -> None:
        await cache.invalidate([uuid.uuid4()])

        assert len(cache._background) == 1
        await cache.close()
        assert len(cache._background) == 0
