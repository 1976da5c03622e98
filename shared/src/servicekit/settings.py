"""The settings base every service extends: typed, from the environment, strict in production."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from servicekit.amqp import broker_urls

DEFAULT_BROKER_CREDENTIALS = "guest:guest@"


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class ServiceSettings(BaseSettings):
    """Common configuration; a service subclass sets ``env_prefix`` and its defaults.

    List the fields that hold secrets in ``secret_fields``: in production a secret that
    still has its development default refuses to start, as does a URL carrying the
    broker's default ``guest:guest`` credentials.
    """

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    secret_fields: ClassVar[tuple[str, ...]] = ()

    environment: Literal["development", "test", "production"] = "development"
    service_name: str
    host: str = "127.0.0.1"
    port: int
    database_url: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_ms: int = Field(default=500, ge=10)
    redis_max_connections: int = Field(default=64, ge=1)
    # One broker URL, or the nodes of a cluster as a comma-separated list of URLs: clients
    # start at a random one and move to the next when theirs goes away (servicekit.amqp).
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    events_exchange: str = "events"
    log_level: str = "INFO"
    log_json: bool = True
    jwt_issuer: str = "urn:shop:auth"
    jwt_audience: str = "urn:shop:api"
    jwks_url: str | None = "http://127.0.0.1:8001/.well-known/jwks.json"
    jwks_file: str | None = None
    # Modest by default: several services and instances share one PostgreSQL server. Most of
    # the 15 are kept open: a connection beyond pool_size is closed when it is handed back, so
    # under steady load a small pool with a large overflow opened (forked a backend) and
    # closed connections all the time.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    consumer_prefetch: int = Field(default=32, ge=1)
    retry_delays_ms: list[int] = Field(default_factory=lambda: [1000, 5000, 30000, 120000])
    # Replicas of each quorum queue this service declares (RabbitMQ uses as many cluster members
    # as there are, up to this: 3 works on one node too), and how often one message may be
    # redelivered (its consumer died holding it) before it is parked in the DLQ.
    queue_replicas: int = Field(default=3, ge=1)
    queue_delivery_limit: int = Field(default=20, ge=1)
    # Retention (docs/retention.md): a message id stays in the inbox far longer than any
    # redelivery, retry or deferral of that message can take; a published outbox row is kept
    # a day for operators to look at.
    inbox_retention_seconds: float = Field(default=7 * 86_400.0, gt=0)
    outbox_retention_seconds: float = Field(default=86_400.0, ge=0)
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    retention_batch_size: int = Field(default=1000, ge=1)
    metrics_enabled: bool = True
    # Once started, the long-lived heap (modules, schemas, pools) is frozen out of the cyclic
    # garbage collector and young collections run less often: every full collection otherwise
    # walks that whole heap again, which cost a quarter of a cached read's CPU.
    gc_freeze: bool = True
    gc_gen0_threshold: int = Field(default=10_000, ge=100)

    @property
    def is_production(self) -> bool:
        """True when running in production mode."""
        return self.environment == "production"

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}")
        return level

    # Validators, unlike Field constraints, still apply when a subclass redeclares the field
    # with its own default.
    @field_validator("port")
    @classmethod
    def _valid_port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError("port must be between 1 and 65535")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _broker_addresses(cls, value: str) -> str:
        broker_urls(value)  # raises ValueError for an empty list or a URL that is not amqp(s)
        return value

    @property
    def amqp_urls(self) -> list[str]:
        """The broker addresses: one, or every node of a cluster."""
        return broker_urls(self.amqp_url)

    @field_validator("retry_delays_ms")
    @classmethod
    def _positive_delays(cls, value: list[int]) -> list[int]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("retry delays must be a non-empty list of positive milliseconds")
        return value

    @model_validator(mode="after")
    def _inbox_outlives_retries(self) -> Self:
        # The retry chain's own delays bound how late a copy of an applied message can come
        # back through this service's queues; an inbox forgetting sooner would apply it twice.
        retry_chain = timedelta(milliseconds=sum(self.retry_delays_ms))
        if timedelta(seconds=self.inbox_retention_seconds) <= 10 * retry_chain:
            raise ValueError("inbox_retention_seconds must exceed ten times the retry delays")
        return self

    def production_checks(self) -> list[str]:
        """List what makes this configuration unfit for production (extend in subclasses)."""
        problems = []
        fields = type(self).model_fields
        for name in self.secret_fields:
            if name not in fields:
                problems.append(f"{name} is listed as a secret but is not a setting")
                continue
            value = _plain(getattr(self, name))
            if not value:
                problems.append(f"{name} is empty")
                continue
            field = fields[name]
            default = field.get_default(call_default_factory=True, validated_data={})
            if value == _plain(default):
                problems.append(f"{name} still has its development default")
        for name in fields:
            value = _plain(getattr(self, name))
            if isinstance(value, str) and DEFAULT_BROKER_CREDENTIALS in value:
                problems.append(f"{name} uses the default guest:guest credentials")
        return problems

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Self:
        if self.environment == "production":
            problems = self.production_checks()
            if problems:
                raise ValueError(
                    f"{self.service_name} refuses to start in production: " + "; ".join(problems)
                )
        return self
