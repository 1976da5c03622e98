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
    # Off: profiles are read from PostgreSQL on every request (a baseline to measure the cache
    # against). Writes still evict the shared entries, so cached instances never serve stale ones.
    cache_enabled: bool = True
