"""Settings of the notifications service (environment variables prefixed ``NOTIFICATIONS_``)."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Configuration of the notifications service."""

    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_")

    service_name: str = "notifications"
    port: int = 8005
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/notifications"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # Implicit TLS (SMTPS, usually port 465); STARTTLS is the separate upgrade on a plain port.
    smtp_use_tls: bool = False
    smtp_start_tls: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    # Connections are kept open and reused for the next message while they have been idle for
    # less than this (servers close idle ones after a minute or more); 0 opens one per message.
    smtp_reuse_idle_seconds: float = Field(default=30.0, ge=0)
    smtp_messages_per_connection: int = Field(default=100, ge=1)
    mail_from: str = "Shop <no-reply@shop.local>"

    # How long a notification keeps being retried before it is marked failed.
    delivery_deadline_seconds: float = Field(default=86_400.0, gt=0)
    send_retry_initial_seconds: float = Field(default=5.0, gt=0)
    send_retry_max_seconds: float = Field(default=600.0, gt=0)
    # A row left in `sending` (the process died mid-send) is retried after this long.
    send_lease_seconds: float = Field(default=120.0, gt=0)
    dispatch_poll_seconds: float = Field(default=1.0, gt=0)
    dispatch_batch_size: int = Field(default=20, ge=1, le=500)
    dispatch_concurrency: int = Field(default=4, ge=1, le=100)
    # How long an order event waits for the user's projection before it is dead-lettered.
    recipient_wait_seconds: float = Field(default=3_600.0, gt=0)

    @field_validator("mail_from")
    @classmethod
    def _mail_from_has_an_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(c in value for c in "\r\n"):
            raise ValueError("mail_from must be an address like 'Shop <no-reply@shop.local>'")
        return value

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> Self:
        # A lease shorter than a send would let a second instance resend a message in flight.
        if self.send_lease_seconds <= self.smtp_timeout_seconds * 2:
            raise ValueError("send_lease_seconds must exceed twice smtp_timeout_seconds")
        if self.smtp_password is not None and not self.smtp_username:
            raise ValueError("smtp_password is set without smtp_username")
        return self

    def production_checks(self) -> list[str]:
        """The base checks, plus: SMTP credentials never travel in clear text."""
        problems = super().production_checks()
        if self.smtp_password is not None and not (self.smtp_use_tls or self.smtp_start_tls):
            problems.append("smtp_password is set but neither smtp_use_tls nor smtp_start_tls")
        return problems

    @property
    def mail_domain(self) -> str:
        """The domain of the sender address (used in Message-IDs)."""
        return parseaddr(self.mail_from)[1].rpartition("@")[2].lower()
