"""Settings: OWASP hashing floor, token lifetime cap, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from auth_service.config import Settings

PRODUCTION_BROKER = "amqp://auth:s3cret@rabbitmq:5672/"


class TestSettings:
    def test_defaults_meet_owasp_and_rfc_9068_limits(self) -> None:
        settings = Settings()
        assert settings.argon2_memory_kib * settings.argon2_time_cost >= 19456 * 2
        assert settings.access_token_ttl_seconds <= 900

    @pytest.mark.parametrize(
        "overrides",
        [
            {"argon2_memory_kib": 19456, "argon2_time_cost": 1},
            {"argon2_memory_kib": 4096, "argon2_time_cost": 10},
            {"access_token_ttl_seconds": 3600},
            {"refresh_token_idle_seconds": 90 * 86400},
        ],
    )
    def test_weaker_settings_are_refused(self, overrides: dict[str, int]) -> None:
        with pytest.raises(ValidationError):
            Settings(**overrides)  # type: ignore[arg-type]

    def test_production_refuses_the_default_keys_directory(self) -> None:
        with pytest.raises(ValidationError, match="keys_dir"):
            Settings(environment="production", amqp_url=PRODUCTION_BROKER)

    def test_production_starts_with_an_explicit_keys_directory(self, tmp_path: Path) -> None:
        settings = Settings(environment="production", amqp_url=PRODUCTION_BROKER, keys_dir=tmp_path)
        assert settings.is_production

    def test_the_keys_directory_comes_from_either_variable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AUTH_SIGNING_KEYS_DIR", str(tmp_path))
        assert Settings().keys_dir == tmp_path
        monkeypatch.delenv("AUTH_SIGNING_KEYS_DIR")
        monkeypatch.setenv("AUTH_KEYS_DIR", str(tmp_path / "x"))
        assert Settings().keys_dir == tmp_path / "x"
