"""What the users service opens on top of the shared runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis

from servicekit.redismux import MultiplexedRedis
from servicekit.runtime import ServiceRuntime
from users_service.cache import UserCache
from users_service.config import Settings
from users_service.repository import CachedUserReader


@dataclass
class UsersResources:
    """The profile cache and the cached reader; created at start-up, closed at shutdown."""

    settings: Settings
    redis: Redis = field(init=False)
    reads: MultiplexedRedis = field(init=False)
    cache: UserCache = field(init=False)
    reader: CachedUserReader = field(init=False)

    async def open(self, runtime: ServiceRuntime) -> None:
        """Connect the cache's Redis pool and build the cached reader (on_start hook)."""
        timeout = self.settings.cache_redis_timeout_ms / 1000
        pool = BlockingConnectionPool.from_url(
            self.settings.redis_url,
            max_connections=self.settings.cache_redis_max_connections,
            # Waiting for a free connection, then using it, stays within twice the budget.
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self.redis = Redis.from_pool(pool)
        self.reads = MultiplexedRedis(
            self.settings.redis_url, timeout=timeout, connect_timeout=timeout
        )
        self.cache = UserCache(
            self.redis,
            self.reads,
            ttl_seconds=self.settings.cache_ttl_seconds,
            lock_ms=self.settings.cache_lock_ms,
            wait_ms=self.settings.cache_wait_ms,
        )
        self.reader = CachedUserReader(
            cache=self.cache, engine=runtime.engine, use_cache=self.settings.cache_enabled
        )

    async def close(self, runtime: ServiceRuntime) -> None:
        """Stop the cache's background work and close its connections (on_stop hook)."""
        await self.cache.close()
        await self.reads.aclose()
        await self.redis.aclose()
