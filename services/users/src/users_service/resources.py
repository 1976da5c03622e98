"""What the users service opens on top of the shared runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from servicekit.redisclient import RedisClient
from servicekit.runtime import ServiceRuntime
from users_service.cache import UserCache
from users_service.config import Settings
from users_service.repository import CachedUserReader


@dataclass
class UsersResources:
    """The profile cache and the cached reader; created at start-up, closed at shutdown."""

    settings: Settings
    redis: RedisClient = field(init=False)
    cache: UserCache = field(init=False)
    reader: CachedUserReader = field(init=False)

    async def open(self, runtime: ServiceRuntime) -> None:
        """Build the cache on the process's Redis client and the cached reader (on_start hook)."""
        self.redis = runtime.redis
        self.cache = UserCache(
            self.redis,
            ttl_seconds=self.settings.cache_ttl_seconds,
            lock_ms=self.settings.cache_lock_ms,
            wait_ms=self.settings.cache_wait_ms,
        )
        self.reader = CachedUserReader(
            cache=self.cache, engine=runtime.engine, use_cache=self.settings.cache_enabled
        )

    async def close(self, runtime: ServiceRuntime) -> None:
        """Stop the cache's background work (on_stop hook); the runtime closes the client."""
        await self.cache.close()
