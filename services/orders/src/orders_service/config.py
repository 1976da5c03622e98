"""Settings of the orders service (environment variables prefixed ``ORDERS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Configuration of the orders service."""

    model_config = SettingsConfigDict(env_prefix="ORDERS_")

    service_name: str = "orders"
    port: int = 8003
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/orders"
