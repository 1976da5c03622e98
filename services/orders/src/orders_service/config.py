"""Settings of the orders service (environment variables prefixed ``ORDERS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Configuration of the orders service."""

    model_config = SettingsConfigDict(env_prefix="ORDERS_")

    service_name: str = "orders"
    port: int = 8003
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/orders"
    # How long a payment event may wait for an order this service has not stored yet (it is
    # redelivered with growing delays meanwhile) before it fails into the dead-letter queue.
    order_wait_seconds: float = Field(default=600.0, gt=0)
    # A repeated Idempotency-Key replays the first response for this long (clients retry within
    # minutes; a day matches what payment APIs promise), then the key may place a new order.
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)
    idempotency_purge_interval_seconds: float = Field(default=3600.0, gt=0)

    # Orders still waiting for payments-gateway are swept every in_flight_sweep_seconds: one
    # pending this long has its order.created published again (same event id); one
    # refund_pending this long has its refund asked for again. Both are idempotent downstream.
    in_flight_sweep_seconds: float = Field(default=30.0, gt=0)
    pending_reannounce_seconds: float = Field(default=150.0, gt=0)
    refund_rerequest_seconds: float = Field(default=150.0, gt=0)
