"""The read-through cache: no stampede, no stale refill, instant invalidation, Redis optional."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.orm import Session

from servicekit.logging import captured_lines
from servicekit.redisclient import create_redis
from servicekit.testing.plugin import Infra, serve_app
from servicekit.testing.redisnodes import redis_cluster
from servicekit.testing.tokens import TokenMinter
from users_service.cache import CacheKeys, UserCache
from users_service.config import Settings
from users_service.models import User
from users_service.schemas import UserRead

from .support import UserSelects, create_profile, resources_of, runtime_of

DEAD_REDIS = "redis://127.0.0.1:1/0"
TRANSACTION = ("BEGIN", "ROLLBACK", "COMMIT")


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(app) as client:
        yield client


@pytest.fixture
def sync_redis(infra: Infra) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(infra.redis_url)
    yield client
    client.close()


class TestCacheEntries:
    async def test_a_read_caches_the_read_model_with_a_ttl_and_a_write_evicts_it(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
    ) -> None:
        app = app_factory(settings)
        async with running(app) as client:
            user_id = await create_profile(app, name="Cached")
            headers = token_minter.headers(user_id)
            keys = CacheKeys.of(user_id)
            redis_client = resources_of(app).redis

            read = await client.get("/users/me", headers=headers)
            cached = await redis_client.get(keys.value)
            ttl = await redis_client.ttl(keys.value)
            await client.get("/users/me", headers=headers)
            await client.patch("/users/me", headers=headers, json={"bio": "new"})
            after_write = await redis_client.get(keys.value)
            metrics = (await client.get("/metrics")).text

        assert keys.value == f"users:user:{{{user_id}}}"
        assert cached is not None
        assert UserRead.model_validate_json(cached).model_dump(mode="json") == read.json()
        assert 300 <= ttl <= 330
        assert after_write is None
        assert 'users_cache_lookups_total{result="hit"}' in metrics
        assert "users_profile_db_reads_total" in metrics

    async def test_a_hit_answers_the_same_json_as_the_miss_that_filled_it(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
    ) -> None:
        app = app_factory(settings)
        async with running(app) as client:
            user_id = await create_profile(app, name="Zoë Ölçer")
            headers = token_minter.headers(user_id)
            before = lookups((await client.get("/metrics")).text)
            misses = [await client.get("/users/me", headers=headers)]
            hits = [
                await client.get("/users/me", headers=headers),
                await client.get(f"/users/{user_id}", headers=headers),
            ]
            schema = (await client.get("/users/openapi.json")).json()
            after = lookups((await client.get("/metrics")).text)

        assert after["hit"] - before["hit"] == 2
        assert after["miss"] - before["miss"] == 1
        for response in misses + hits:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.content == misses[0].content
            assert int(response.headers["content-length"]) == len(misses[0].content)
        body = misses[0].json()
        assert body["name"] == "Zoë Ölçer"
        assert body["created_at"].endswith("Z")
        for path in ("/users/me", "/users/{user_id}"):
            ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
            assert ok["schema"] == {"$ref": "#/components/schemas/UserRead"}

    async def test_an_entry_this_version_cannot_read_is_dropped_and_read_afresh(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
    ) -> None:
        app = app_factory(settings)
        async with running(app) as client:
            user_id = await create_profile(app, name="Fresh")
            headers = token_minter.headers(user_id)
            keys = CacheKeys.of(user_id)
            redis_client = resources_of(app).redis
            await redis_client.set(keys.value, b'{"id": "not a profile"}', ex=300)

            with captured_lines() as lines:
                first = await client.get("/users/me", headers=headers)
            refilled = await redis_client.get(keys.value)

        assert first.status_code == 200
        assert first.json()["name"] == "Fresh"
        assert any(line.get("event") == "cache.unreadable_entry" for line in lines)
        assert refilled is not None
        assert UserRead.model_validate_json(refilled).name == "Fresh"

    async def test_an_entry_is_validated_once_until_its_bytes_change(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        validated: list[bytes] = []
        validate = UserRead.model_validate_json

        def counting(data: Any, **kwargs: Any) -> UserRead:
            validated.append(bytes(data))
            return validate(data, **kwargs)

        monkeypatch.setattr(UserRead, "model_validate_json", counting)
        app = app_factory(settings)
        async with running(app) as client:
            user_id = await create_profile(app, name="Before")
            headers = token_minter.headers(user_id)
            await client.get("/users/me", headers=headers)  # the miss fills the entry
            hits = [await client.get("/users/me", headers=headers) for _ in range(3)]
            after_hits = len(validated)
            await client.patch("/users/me", headers=headers, json={"name": "After"})
            await client.get("/users/me", headers=headers)  # a miss again
            changed = [await client.get("/users/me", headers=headers) for _ in range(2)]
            after_change = list(validated)
            cache = resources_of(app).cache
            cache.remembered_entries = 1
            other = await create_profile(app, name="Other")
            for _ in range(2):
                await client.get(f"/users/{other}", headers=token_minter.headers(other))
            remembered = len(cache._validated)

        assert [hit.json()["name"] for hit in hits] == ["Before"] * 3
        assert after_hits == 1
        assert [hit.json()["name"] for hit in changed] == ["After"] * 2
        assert len(after_change) == 2
        assert b'"After"' in after_change[1]
        assert remembered == 1


def lookups(metrics: str) -> dict[str, float]:
    """users_cache_lookups_total by result, from a /metrics page."""
    found = re.findall(r'^users_cache_lookups_total\{result="(\w+)"\} (\S+)$', metrics, re.M)
    return {result: float(value) for result, value in found}


class TestStampede:
    async def test_fifty_concurrent_reads_of_a_cold_key_query_the_database_once(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
        user_selects: UserSelects,
    ) -> None:
        app = app_factory(settings)
        async with running(app) as client:
            user_id = await create_profile(app, name="Popular")
            headers = token_minter.headers(user_id)
            user_selects.watch(app)

            responses = await asyncio.gather(
                *(client.get("/users/me", headers=headers) for _ in range(50))
            )

        assert [r.status_code for r in responses] == [200] * 50
        assert {r.json()["name"] for r in responses} == {"Popular"}
        assert user_selects.count == 1

    async def test_concurrent_reads_through_two_instances_query_the_database_once(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
        user_selects: UserSelects,
    ) -> None:
        first, second = app_factory(settings), app_factory(settings)
        async with running(first) as one, running(second) as two:
            user_id = await create_profile(first, name="Shared")
            headers = token_minter.headers(user_id)
            user_selects.watch(first)
            user_selects.watch(second)

            responses = await asyncio.gather(
                *(client.get("/users/me", headers=headers) for client in [one, two] * 25)
            )

        assert [r.status_code for r in responses] == [200] * 50
        assert user_selects.count == 1


class TestInvalidation:
    async def test_a_patch_through_one_instance_shows_at_once_through_another(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
    ) -> None:
        first, second = app_factory(settings), app_factory(settings)
        async with running(first) as one, running(second) as two:
            user_id = await create_profile(first, name="Before")
            headers = token_minter.headers(user_id)
            warm = await two.get("/users/me", headers=headers)  # cached by the second

            results = []
            for i in range(5):
                patched = await one.patch("/users/me", headers=headers, json={"name": f"After {i}"})
                read = await two.get("/users/me", headers=headers)
                results.append((patched.status_code, read.json()["name"]))

        assert warm.json()["name"] == "Before"
        assert results == [(200, f"After {i}") for i in range(5)]

    async def test_the_cache_is_invalidated_after_the_commit_not_before(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
        sync_redis: redis.Redis,
    ) -> None:
        app = app_factory(settings)
        async with running(app) as client:
            user_id = await create_profile(app)
            headers = token_minter.headers(user_id)
            keys = CacheKeys.of(user_id)
            await client.get("/users/me", headers=headers)
            at_commit: list[tuple[Any, Any]] = []

            def after_flush(session: Session, _: Any) -> None:
                if any(isinstance(row, User) and row.id == user_id for row in session.dirty):
                    session.info["test.patched_user"] = True

            def before_commit(session: Session) -> None:
                # What a concurrent reader on another instance would find at that moment.
                if session.info.get("test.patched_user"):
                    at_commit.append((sync_redis.get(keys.value), sync_redis.get(keys.generation)))

            event.listen(Session, "after_flush", after_flush)
            event.listen(Session, "before_commit", before_commit)
            try:
                generation_before = sync_redis.get(keys.generation)
                patched = await client.patch("/users/me", headers=headers, json={"name": "Z"})
            finally:
                event.remove(Session, "before_commit", before_commit)
                event.remove(Session, "after_flush", after_flush)
            value_after, generation_after = (
                sync_redis.get(keys.value),
                sync_redis.get(keys.generation),
            )

        assert patched.status_code == 200
        assert len(at_commit) == 1
        cached_at_commit, generation_at_commit = at_commit[0]
        assert cached_at_commit is not None  # still the old entry: not evicted before the commit
        assert generation_at_commit == generation_before
        assert value_after is None  # evicted before the response was sent
        assert generation_after != generation_before

    async def test_a_slow_fill_racing_an_update_leaves_no_stale_value(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
    ) -> None:
        app = app_factory(settings)
        async with running(app) as client:
            user_id = await create_profile(app, name="Old")
            headers = token_minter.headers(user_id)
            cache = resources_of(app).cache
            keys = CacheKeys.of(user_id)
            reading, release = asyncio.Event(), asyncio.Event()

            async def slow_fill(_: uuid.UUID) -> None:
                reading.set()
                await release.wait()

            cache.before_fill = slow_fill
            slow_read = asyncio.create_task(client.get("/users/me", headers=headers))
            await asyncio.wait_for(reading.wait(), timeout=5)  # it has read "Old" from the db
            cache.before_fill = None
            patched = await client.patch("/users/me", headers=headers, json={"name": "New"})
            release.set()
            slow = await slow_read
            cached = await runtime_of(app).redis.get(keys.value)
            fresh = await client.get("/users/me", headers=headers)
            cached_after_read = await runtime_of(app).redis.get(keys.value)

        assert patched.status_code == 200
        assert slow.json()["name"] == "Old"  # it started before the update: fine
        assert cached is None  # the old row was not put back
        assert fresh.json()["name"] == "New"
        assert cached_after_read is not None
        assert UserRead.model_validate_json(cached_after_read).name == "New"


class TestRedisDown:
    async def test_reads_and_writes_work_from_the_database_with_a_warning(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
    ) -> None:
        app = app_factory(settings.model_copy(update={"redis_url": DEAD_REDIS}))
        with captured_lines() as lines:
            async with running(app) as client:
                user_id = await create_profile(app, name="Resilient")
                headers = token_minter.headers(user_id)

                read = await client.get("/users/me", headers=headers)
                patched = await client.patch(
                    "/users/me", headers=headers, json={"bio": "still here"}
                )
                reread = await client.get("/users/me", headers=headers)
                by_id = await client.get(f"/users/{user_id}", headers=headers)
                burst = await asyncio.gather(
                    *(client.get("/users/me", headers=headers) for _ in range(20))
                )
                ready = await client.get("/health/ready")

        assert read.status_code == 200
        assert read.json()["name"] == "Resilient"
        assert patched.status_code == 200
        assert patched.json()["bio"] == "still here"
        assert reread.status_code == 200
        assert reread.json()["bio"] == "still here"
        assert by_id.status_code == 200
        assert {r.status_code for r in burst} == {200}
        assert ready.status_code == 200
        warnings = [line["event"] for line in lines if line.get("level") == "warning"]
        assert "cache.redis_unavailable" in warnings


class TestDatabaseDown:
    async def test_a_read_is_503_not_500(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
    ) -> None:
        broken = settings.model_copy(
            update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"}
        )
        async with running(app_factory(broken)) as client:
            headers = token_minter.headers(uuid.uuid4())
            read = await client.get("/users/me", headers=headers)
            write = await client.patch("/users/me", headers=headers, json={"name": "x"})

        assert read.status_code == 503
        assert write.status_code == 503
        assert read.json()["error"]["code"] == "database_unavailable"


class TestCacheSwitchedOff:
    async def test_every_read_goes_to_the_database_and_writes_still_evict(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
        user_selects: UserSelects,
    ) -> None:
        cached_app = app_factory(settings)
        uncached_app = app_factory(settings.model_copy(update={"cache_enabled": False}))
        async with running(cached_app) as cached, running(uncached_app) as uncached:
            user_id = await create_profile(cached_app, name="Before")
            headers = token_minter.headers(user_id)
            keys = CacheKeys.of(user_id)
            redis_client = resources_of(cached_app).redis
            assert (await cached.get("/users/me", headers=headers)).json()["name"] == "Before"
            user_selects.watch(uncached_app)

            reads = [await uncached.get("/users/me", headers=headers) for _ in range(3)]
            changed = await uncached.patch("/users/me", headers=headers, json={"name": "After"})

            assert [r.json()["name"] for r in reads] == ["Before"] * 3
            assert user_selects.count >= 3  # each read, none answered by Redis
            assert changed.status_code == 200
            # The cache-off instance still evicts the shared entry on a write.
            assert await redis_client.get(keys.value) is None
            assert (await cached.get("/users/me", headers=headers)).json()["name"] == "After"

    async def test_a_read_from_the_database_opens_no_transaction(
        self,
        settings: Settings,
        app_factory: Callable[[Settings], FastAPI],
        token_minter: TokenMinter,
    ) -> None:
        # A miss is one statement in autocommit: no BEGIN and ROLLBACK round trips around it.
        app = app_factory(settings.model_copy(update={"cache_enabled": False}))
        statements: list[str] = []
        logged: set[int] = set()

        def log_queries(dbapi_connection: Any, *_: Any) -> None:
            driver = dbapi_connection.driver_connection
            if id(driver) not in logged:
                logged.add(id(driver))
                driver.add_query_logger(lambda record: statements.append(record.query))

        async with running(app) as client:
            user_id = await create_profile(app, name="Read")
            headers = token_minter.headers(user_id)
            event.listen(runtime_of(app).engine.sync_engine, "checkout", log_queries)

            reads = [await client.get("/users/me", headers=headers) for _ in range(3)]
            during_reads = list(statements)
            changed = await client.patch("/users/me", headers=headers, json={"name": "Written"})

        assert [r.json()["name"] for r in reads] == ["Read"] * 3
        assert not [s for s in during_reads if s.lstrip().upper().startswith(TRANSACTION)]
        assert changed.status_code == 200
        # The logger does see transactions: the write opens one.
        assert any(s.lstrip().upper().startswith("BEGIN") for s in statements[len(during_reads) :])


class TestRedisCluster:
    async def test_lookups_fills_and_invalidations_of_several_users_work_on_a_cluster(
        self,
    ) -> None:
        loads: list[uuid.UUID] = []

        async def load(user_id: uuid.UUID) -> UserRead:
            loads.append(user_id)
            now = datetime.now(UTC)
            return UserRead(
                id=user_id,
                email="a@example.com",
                name="Clustered",
                bio=None,
                roles=[],
                created_at=now,
                updated_at=now,
            )

        users = [uuid.uuid4() for _ in range(12)]
        with redis_cluster(3) as cluster:
            client = create_redis(cluster.url, timeout=3)
            cache = UserCache(client)
            try:
                first = [await cache.get(user_id, load) for user_id in users]
                second = [await cache.get(user_id, load) for user_id in users]
                owners = {client.get_node_from_key(CacheKeys.of(u).value).port for u in users}
                await cache.invalidate(users)
                evicted = [await client.get(CacheKeys.of(u).value) for u in users]
                degraded = cache.breaker.state
            finally:
                await cache.close()
                await client.aclose()

        assert [p.user.name for p in first if p] == ["Clustered"] * 12
        assert [p.user.name for p in second if p] == ["Clustered"] * 12
        assert loads == users  # the second round came from Redis
        assert len(owners) > 1  # the users' keys are spread over the nodes
        assert evicted == [None] * 12
        assert degraded.name == "CLOSED"
