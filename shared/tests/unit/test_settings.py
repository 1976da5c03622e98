"""Settings come from the environment with working defaults, and refuse unsafe production use."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_")

    secret_fields: ClassVar[tuple[str, ...]] = ("webhook_secret",)

    service_name: str = "orders"
    port: int = 8003
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/orders"
    webhook_secret: SecretStr = SecretStr("dev-webhook-secret")


PRODUCTION_ENV = {
    "ORDERS_ENVIRONMENT": "production",
    "ORDERS_WEBHOOK_SECRET": "a-real-secret-from-the-vault",
    "ORDERS_AMQP_URL": "amqp://orders:s3cret@rabbit:5672/",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ORDERS_ENVIRONMENT", "ORDERS_PORT", "ORDERS_WEBHOOK_SECRET", "ORDERS_AMQP_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class TestDefaults:
    def test_development_defaults_point_at_this_machine(self, env: pytest.MonkeyPatch) -> None:
        settings = OrdersSettings()

        assert settings.environment == "development"
        assert settings.port == 8003
        assert settings.database_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:5432/")
        assert settings.redis_url == "redis://127.0.0.1:6379/0"
        assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
        assert settings.retry_delays_ms == [1000, 5000, 30000, 120000]
        assert settings.jwt_issuer == "urn:shop:auth"
        assert settings.jwt_audience == "urn:shop:api"
        assert not settings.is_production


class TestEnvironment:
    def test_values_are_read_with_the_service_prefix(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("ORDERS_PORT", "9103")
        env.setenv("ORDERS_LOG_LEVEL", "debug")
        env.setenv("ORDERS_RETRY_DELAYS_MS", "[10, 20]")
        env.setenv("ORDERS_LOG_JSON", "false")

        settings = OrdersSettings()

        assert settings.port == 9103
        assert settings.log_level == "DEBUG"
        assert settings.retry_delays_ms == [10, 20]
        assert settings.log_json is False

    def test_another_services_prefix_is_ignored(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("USERS_PORT", "9999")
        env.setenv("PORT", "9998")

        assert OrdersSettings().port == 8003

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("ORDERS_PORT", "70000"),
            ("ORDERS_LOG_LEVEL", "LOUD"),
            ("ORDERS_RETRY_DELAYS_MS", "[]"),
            ("ORDERS_RETRY_DELAYS_MS", "[1000, -1]"),
            ("ORDERS_ENVIRONMENT", "staging"),
        ],
    )
    def test_invalid_values_fail_at_startup(
        self, env: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        env.setenv(name, value)

        with pytest.raises(ValidationError):
            OrdersSettings()


class TestProduction:
    def test_production_with_real_secrets_starts(self, env: pytest.MonkeyPatch) -> None:
        for name, value in PRODUCTION_ENV.items():
            env.setenv(name, value)

        settings = OrdersSettings()

        assert settings.is_production
        assert settings.webhook_secret.get_secret_value() == "a-real-secret-from-the-vault"

    def test_production_refuses_a_default_secret(self, env: pytest.MonkeyPatch) -> None:
        for name, value in PRODUCTION_ENV.items():
            env.setenv(name, value)
        env.delenv("ORDERS_WEBHOOK_SECRET")

        with pytest.raises(ValueError, match="refuses to start") as caught:
            OrdersSettings()

        assert "webhook_secret" in str(caught.value)

    def test_production_refuses_an_empty_secret(self, env: pytest.MonkeyPatch) -> None:
        for name, value in PRODUCTION_ENV.items():
            env.setenv(name, value)
        env.setenv("ORDERS_WEBHOOK_SECRET", "")

        with pytest.raises(ValueError, match="webhook_secret is empty"):
            OrdersSettings()

    def test_production_refuses_guest_broker_credentials(self, env: pytest.MonkeyPatch) -> None:
        for name, value in PRODUCTION_ENV.items():
            env.setenv(name, value)
        env.delenv("ORDERS_AMQP_URL")

        with pytest.raises(ValueError, match="amqp_url uses the default guest:guest"):
            OrdersSettings()

    def test_development_accepts_the_defaults(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("ORDERS_ENVIRONMENT", "development")

        settings = OrdersSettings()

        assert settings.webhook_secret.get_secret_value() == "dev-webhook-secret"

    def test_subclasses_can_add_their_own_checks(self, env: pytest.MonkeyPatch) -> None:
        class StrictSettings(OrdersSettings):
            def production_checks(self) -> list[str]:
                problems = super().production_checks()
                if not self.log_json:
                    problems.append("log_json must be on")
                return problems

        for name, value in PRODUCTION_ENV.items():
            env.setenv(name, value)
        env.setenv("ORDERS_LOG_JSON", "false")

        with pytest.raises(ValueError, match="log_json must be on"):
            StrictSettings()


class TestBrokerAddresses:
    def test_a_comma_separated_list_names_every_node(self, env: pytest.MonkeyPatch) -> None:
        nodes = [f"amqp://orders:s3cret@rabbit-{i}:5672/" for i in range(3)]
        env.setenv("ORDERS_AMQP_URL", ",".join(nodes))
        assert OrdersSettings().amqp_urls == nodes

    def test_one_url_is_one_node(self, env: pytest.MonkeyPatch) -> None:
        assert OrdersSettings().amqp_urls == ["amqp://guest:guest@127.0.0.1:5672/"]

    def test_an_entry_that_is_no_amqp_url_is_refused(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("ORDERS_AMQP_URL", "amqp://orders:s3cret@rabbit-0/,rabbit-1:5672")
        with pytest.raises(ValidationError, match="amqp_url"):
            OrdersSettings()

    def test_production_refuses_guest_credentials_on_any_node(
        self, env: pytest.MonkeyPatch
    ) -> None:
        for name, value in PRODUCTION_ENV.items():
            env.setenv(name, value)
        env.setenv("ORDERS_AMQP_URL", "amqp://orders:s3cret@rabbit-0/,amqp://guest:guest@rabbit-1/")
        with pytest.raises(ValueError, match="guest:guest"):
            OrdersSettings()
