"""Settings of the users service (environment variables prefixed ``USERS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Configuration of the users service."""

    model_config = SettingsConfigDict(env_prefix="USERS_")

    service_name: str = "users"
    port: int = 8002
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/users"
