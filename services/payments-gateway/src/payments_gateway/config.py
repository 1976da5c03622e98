"""Settings of the payments-gateway service (environment variables prefixed ``PAYMENTS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Configuration of the payments-gateway service."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_")

    service_name: str = "payments-gateway"
    port: int = 8004
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/payments"
