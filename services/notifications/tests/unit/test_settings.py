"""The service's settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from notifications_service.config import Settings


class TestSettings:
    def test_development_defaults_send_to_the_local_sink(self) -> None:
        settings = Settings()
        assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)
        assert settings.mail_from == "Shop <no-reply@shop.local>"
        assert settings.mail_domain == "shop.local"
        assert settings.smtp_use_tls is False

    def test_reads_the_environment_with_its_prefix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("NOTIFICATIONS_SMTP_HOST", "mail.internal")
        monkeypatch.setenv("NOTIFICATIONS_SMTP_USERNAME", "shop")
        monkeypatch.setenv("NOTIFICATIONS_SMTP_PASSWORD", "s3cret")
        settings = Settings()
        assert settings.smtp_host == "mail.internal"
        assert settings.smtp_password is not None
        assert settings.smtp_password.get_secret_value() == "s3cret"
        assert "s3cret" not in repr(settings)

    def test_a_lease_shorter_than_two_sends_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="send_lease_seconds"):
            Settings(smtp_timeout_seconds=10, send_lease_seconds=15)

    @pytest.mark.parametrize("mail_from", ["Shop", "no-at-sign", "a@b\r\nBcc: x@y.z"])
    def test_a_sender_without_an_address_is_refused(self, mail_from: str) -> None:
        with pytest.raises(ValidationError, match="mail_from"):
            Settings(mail_from=mail_from)

    def test_production_refuses_smtp_credentials_in_clear_text(self) -> None:
        with pytest.raises(ValidationError, match="smtp_start_tls"):
            Settings(
                environment="production",
                smtp_host="mail.internal",
                smtp_username="shop",
                smtp_password="s3cret",
                amqp_url="amqp://svc:pw@rabbitmq:5672/",
            )
        accepted = Settings(
            environment="production",
            smtp_host="mail.internal",
            smtp_username="shop",
            smtp_password="s3cret",
            smtp_start_tls=True,
            amqp_url="amqp://svc:pw@rabbitmq:5672/",
        )
        assert accepted.smtp_start_tls is True
