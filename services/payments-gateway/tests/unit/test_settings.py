"""Settings: production refuses development secrets; the pool fits the consumers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from payments_gateway.config import Settings

PRODUCTION = {
    "environment": "production",
    "amqp_url": "amqp://svc:strong@broker:5672/",
}


class TestSettings:
    def test_production_refuses_the_development_webhook_secret(self) -> None:
        with pytest.raises(ValidationError, match="webhook_secret"):
            Settings(**PRODUCTION)

    def test_production_starts_with_a_real_webhook_secret(self) -> None:
        settings = Settings(**PRODUCTION, webhook_secret="whsec_" + "x" * 32)

        assert settings.webhook_secret.get_secret_value().startswith("whsec_")
        assert "x" * 32 not in repr(settings)

    def test_the_development_defaults_work(self) -> None:
        settings = Settings()

        assert settings.provider_url == "http://127.0.0.1:8090"
        assert settings.provider_deadline_seconds == 600
        assert settings.port == 8004

    def test_a_pool_too_small_for_the_consumers_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="db_pool_size"):
            Settings(payment_concurrency=20, db_pool_size=5, db_max_overflow=5)
