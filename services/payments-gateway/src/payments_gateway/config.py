"""Settings of the payments-gateway service (environment variables prefixed ``PAYMENTS_``)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Configuration of the payments-gateway service."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_")

    secret_fields: ClassVar[tuple[str, ...]] = ("webhook_secret",)

    service_name: str = "payments-gateway"
    port: int = 8004
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/payments"
    # Each payment in flight holds two connections (see payment_concurrency below); all of
    # them are kept open, so a steady stream of payments does not reconnect.
    db_pool_size: int = 18
    db_max_overflow: int = 2

    # The external payment provider.
    provider_url: str = "http://127.0.0.1:8090"
    provider_connect_timeout: float = Field(default=2.0, gt=0)
    provider_read_timeout: float = Field(default=5.0, gt=0)
    provider_max_connections: int = Field(default=50, ge=1)
    # Split over this many pools (see payments_gateway.transport): 1 is httpx's single pool.
    provider_connection_pools: int = Field(default=4, ge=1)
    # Attempts of one provider call (the first included) before it counts as one failure.
    provider_max_attempts: int = Field(default=3, ge=1, le=10)
    provider_backoff_initial: float = Field(default=0.2, ge=0)
    provider_backoff_max: float = Field(default=2.0, ge=0)
    # A Retry-After longer than this ends the call; the event is redelivered after it instead.
    provider_retry_after_max: float = Field(default=5.0, ge=0)
    # How long an unreachable provider may keep a payment pending before it fails.
    provider_deadline_seconds: float = Field(default=600.0, gt=0)
    # Delay before a payment deferred by an unreachable provider is tried again.
    provider_defer_seconds: float = Field(default=5.0, gt=0)
    # How long a refund request waits for its payment to be settled or to appear at all.
    refund_wait_seconds: float = Field(default=300.0, gt=0)

    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=30.0, ge=0)

    # A charge the provider answered pending, still pending this long after, is looked up by id
    # (GET /v1/charges/{id}) every reconcile_interval_seconds: a webhook the provider never
    # delivered (or we never received) does not leave the order pending for ever.
    reconcile_after_seconds: float = Field(default=120.0, gt=0)
    reconcile_interval_seconds: float = Field(default=30.0, gt=0)
    reconcile_batch: int = Field(default=50, ge=1)
    # A payment pending and never charged this long (its order.created lost, or waiting in a
    # delay queue) is charged again by the sweeper, with the same idempotency key, on the same
    # reconcile_interval_seconds; past provider_deadline_seconds it fails. Longer than the
    # longest normal wait between two attempts (a delay tier, an open circuit's 30 s).
    payment_stall_seconds: float = Field(default=150.0, gt=0)

    # Shared with the provider; signs its webhook deliveries.
    webhook_secret: SecretStr = SecretStr("whsec_dev_only")
    webhook_tolerance_seconds: int = Field(default=300, ge=1)
    # Applied delivery ids are kept this long to refuse replays, then deleted (a redelivery
    # after that is still applied at most once: settling a payment is a guarded update).
    webhook_retention_days: int = Field(default=7, ge=1)

    # Each in-flight payment holds two connections (the consumer's transaction and the short
    # one that records the payment before the provider call), so this bounds the pool use.
    payment_concurrency: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _pool_fits_the_consumers(self) -> Self:
        needed = 2 * self.payment_concurrency + 2
        if self.db_pool_size + self.db_max_overflow < needed:
            raise ValueError(
                f"db_pool_size + db_max_overflow must be at least {needed} "
                f"for payment_concurrency={self.payment_concurrency}"
            )
        return self
