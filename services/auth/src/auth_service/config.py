"""Settings of the auth service (environment variables prefixed ``AUTH_``)."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, IPvAnyNetwork, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings

DEFAULT_KEYS_DIR = Path(".run/keys")

# OWASP Password Storage Cheat Sheet: argon2id with m=47104 KiB/t=1, m=19456/t=2,
# m=12288/t=3, m=9216/t=4 or m=7168/t=5 (p=1) are equivalent minimums; their smallest
# memory x time product is 7168 x 5.
OWASP_MIN_MEMORY_KIB = 7168
OWASP_MIN_MEMORY_TIME_PRODUCT = 7168 * 5


class Settings(ServiceSettings):
    """Configuration of the auth service."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", validate_by_name=True)

    service_name: str = "auth"
    port: int = 8001
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/auth"

    # Signing keys: PEM files (with a JSON metadata file each) in a directory shared by every
    # instance, and/or one private key in the environment.
    keys_dir: Path = Field(
        default=DEFAULT_KEYS_DIR,
        validation_alias=AliasChoices("AUTH_KEYS_DIR", "AUTH_SIGNING_KEYS_DIR"),
    )
    signing_key_pem: SecretStr | None = None
    # A rotated key is published this long before it signs, so every instance and every
    # verifier's JWKS has it by the time the first token carries its kid.
    key_activation_delay_seconds: int = Field(default=60, ge=0)
    keys_reload_seconds: float = Field(default=5.0, gt=0)
    rsa_key_bits: int = Field(default=3072, ge=2048)

    access_token_ttl_seconds: int = Field(default=900, ge=30, le=900)
    refresh_token_idle_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    refresh_family_lifetime_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    ended_session_retention_seconds: int = Field(default=86_400, ge=0)

    argon2_memory_kib: int = Field(default=19456, ge=OWASP_MIN_MEMORY_KIB)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)
    hash_concurrency: int = Field(default=2, ge=1)
    hash_queue_timeout_seconds: float = Field(default=10.0, gt=0)

    # Namespace of this service's Redis keys (deployments or test runs sharing one Redis).
    redis_key_prefix: str = Field(default="auth", min_length=1)
    login_email_max_failures: int = Field(default=10, ge=1)
    login_address_max_failures: int = Field(default=100, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    # Peers whose X-Real-IP / X-Forwarded-For are believed (the gateway); IPs or CIDRs.
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network("127.0.0.1"), ip_network("::1")]
    )

    @model_validator(mode="after")
    def _argon2_at_least_owasp(self) -> Self:
        if self.argon2_memory_kib * self.argon2_time_cost < OWASP_MIN_MEMORY_TIME_PRODUCT:
            raise ValueError(
                "argon2 parameters are below OWASP's minimum "
                "(memory_kib x time_cost must be at least 7168 x 5)"
            )
        if self.refresh_token_idle_seconds > self.refresh_family_lifetime_seconds:
            raise ValueError("refresh_token_idle_seconds exceeds refresh_family_lifetime_seconds")
        return self

    def production_checks(self) -> list[str]:
        """Add auth's own: signing keys must come from an explicit place."""
        problems = super().production_checks()
        if self.signing_key_pem is None and self.keys_dir == DEFAULT_KEYS_DIR:
            problems.append(
                "keys_dir still has its development default; set AUTH_KEYS_DIR or "
                "AUTH_SIGNING_KEY_PEM"
            )
        return problems
