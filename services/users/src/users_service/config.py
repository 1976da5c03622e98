"""Settings of the users service (environment variables prefixed ``USERS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Configuration of the users service."""

    model_config = SettingsConfigDict(env_prefix="USERS_")

    service_name: str = "users"
    port: int = 8002
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/users"
    # How long a profile stays in Redis without being invalidated (each fill adds up to 10 %
    # jitter so entries filled together do not expire together).
    cache_ttl_seconds: int = Field(default=300, ge=1)
    # The fill lock: how long one instance may hold it, and how long the others wait for its
    # result before reading the database themselves.
    cache_lock_ms: int = Field(default=2000, ge=10)
    cache_wait_ms: int = Field(default=1000, ge=0)
    # Every request's lookup goes over one pipelined connection per process (servicekit.redismux).
    # Misses (fill lock, fill) and invalidations use a pool of at most this many. Bounded, so a
    # burst of misses queues for a connection instead of opening one each (a connection storm
    # on a busy event loop times out and would needlessly switch the cache off for a while).
    cache_redis_max_connections: int = Field(default=16, ge=1)
    # Budget of one cache command (connect or reply); past it the database answers instead.
    cache_redis_timeout_ms: int = Field(default=500, ge=10)
    # Off: profiles are read from PostgreSQL on every request (a baseline to measure the cache
    # against). Writes still evict the shared entries, so cached instances never serve stale ones.
    cache_enabled: bool = True
