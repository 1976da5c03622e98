"""The key store: which key signs, which keys are published, rotation, production rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey

from auth_service.config import Settings
from auth_service.keys import (
    CLOCK_SKEW,
    KeyStore,
    NoSigningKeyError,
    UnfitKeysError,
    generate_key,
    thumbprint,
)
from auth_service.resources import AuthResources

TTL = timedelta(minutes=15)
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _store(directory: Path, clock: Clock, env_pem: str | None = None) -> KeyStore:
    return KeyStore(directory=directory, access_token_ttl=TTL, env_pem=env_pem, clock=clock)


class TestKeyStore:
    def test_an_empty_directory_has_no_signing_key(self, tmp_path: Path) -> None:
        store = _store(tmp_path, Clock(T0))
        store.load()
        with pytest.raises(NoSigningKeyError):
            store.signing_key()
        assert store.jwks() == {"keys": []}

    def test_rotation_publishes_first_signs_later_and_retires_after_the_last_token(
        self, tmp_path: Path
    ) -> None:
        clock = Clock(T0)
        store = _store(tmp_path, clock)
        first, _ = store.rotate(bits=2048, activation_delay=timedelta(minutes=1))
        assert first.active_from == T0  # nothing signed yet: the first key signs at once

        clock.now = T0 + timedelta(hours=1)
        second, _ = store.rotate(bits=2048, activation_delay=timedelta(minutes=1))

        # Pending: published, not signing.
        assert store.signing_key().kid == first.kid
        assert {k.kid for k in store.published()} == {first.kid, second.kid}
        # Active: signs; the old key stays for tokens it signed.
        clock.now = second.active_from
        assert store.signing_key().kid == second.kid
        assert {k.kid for k in store.published()} == {first.kid, second.kid}
        clock.now = second.active_from + TTL + CLOCK_SKEW - timedelta(seconds=1)
        assert first.kid in {k.kid for k in store.published()}
        # Once every token of the old key has expired, it leaves the JWKS and the disk.
        clock.now = second.active_from + TTL + CLOCK_SKEW
        assert [k.kid for k in store.published()] == [second.kid]
        assert store.prune() == [first.kid]
        assert not (tmp_path / f"{first.kid}.pem").exists()

    def test_another_store_on_the_same_directory_sees_the_rotation(self, tmp_path: Path) -> None:
        clock = Clock(T0)
        writer, reader = _store(tmp_path, clock), _store(tmp_path, clock)
        key, _ = writer.rotate(bits=2048, activation_delay=timedelta(0))
        reader.load()
        assert reader.signing_key().kid == key.kid

    def test_kid_is_the_rfc_7638_thumbprint(self, tmp_path: Path) -> None:
        key = generate_key(bits=2048, active_from=T0, origin="operator")
        jwk: dict[str, str | list[str]] = dict(key.public_jwk())
        independent = RSAKey.import_key(jwk).thumbprint()
        assert key.kid == thumbprint(key.private_key) == independent

    def test_the_jwks_holds_no_private_members(self, tmp_path: Path) -> None:
        store = _store(tmp_path, Clock(T0))
        store.rotate(bits=2048, activation_delay=timedelta(0))
        (jwk,) = store.jwks()["keys"]
        assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}

    def test_files_are_private_and_a_tampered_key_is_ignored(self, tmp_path: Path) -> None:
        clock = Clock(T0)
        store = _store(tmp_path, clock)
        good, _ = store.rotate(bits=2048, activation_delay=timedelta(0))
        assert (tmp_path / f"{good.kid}.pem").stat().st_mode & 0o077 == 0
        other = generate_key(bits=2048, active_from=T0, origin="operator")
        # A file whose key does not match its name is skipped, not trusted.
        (tmp_path / "forged.pem").write_bytes(other.private_pem())
        (tmp_path / "forged.json").write_text(
            json.dumps({"created_at": T0.isoformat(), "active_from": T0.isoformat()})
        )
        fresh = _store(tmp_path, clock)
        fresh.load()
        assert [k.kid for k in fresh.keys] == [good.kid]

    def test_a_vanished_directory_does_not_take_the_keys_away(self, tmp_path: Path) -> None:
        clock = Clock(T0)
        store = _store(tmp_path / "keys", clock)
        key, _ = store.rotate(bits=2048, activation_delay=timedelta(0))
        for path in (tmp_path / "keys").iterdir():
            path.unlink()
        (tmp_path / "keys").rmdir()
        store.load()
        assert store.signing_key().kid == key.kid

    def test_a_key_from_the_environment_signs_and_directory_keys_stay_verifiable(
        self, tmp_path: Path
    ) -> None:
        clock = Clock(T0)
        old, _ = _store(tmp_path, clock).rotate(bits=2048, activation_delay=timedelta(0))
        env_key = generate_key(bits=2048, active_from=T0, origin="operator")
        store = _store(tmp_path, clock, env_pem=env_key.private_pem().decode())
        store.load()
        assert store.signing_key().kid == env_key.kid
        assert {k["kid"] for k in store.jwks()["keys"]} == {old.kid, env_key.kid}

    def test_a_weak_or_non_rsa_environment_key_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError):
            _store(tmp_path, Clock(T0), env_pem="-----BEGIN PRIVATE KEY-----\nnope\n")


class TestProductionKeys:
    def _production(self, keys_dir: Path) -> Settings:
        return Settings(
            environment="production",
            keys_dir=keys_dir,
            amqp_url="amqp://auth:s3cret@rabbitmq:5672/",
        )

    def test_development_keys_refuse_to_start(self, tmp_path: Path) -> None:
        _store(tmp_path, Clock(datetime.now(UTC))).ensure_development_key(bits=2048)
        with pytest.raises(UnfitKeysError, match="development keys"):
            AuthResources(self._production(tmp_path)).prepare_keys()

    def test_no_key_refuses_to_start_and_none_is_generated(self, tmp_path: Path) -> None:
        with pytest.raises(UnfitKeysError, match="rotate-keys"):
            AuthResources(self._production(tmp_path)).prepare_keys()
        assert list(tmp_path.glob("*.pem")) == []

    def test_operator_keys_start(self, tmp_path: Path) -> None:
        _store(tmp_path, Clock(datetime.now(UTC))).rotate(bits=2048, activation_delay=timedelta(0))
        AuthResources(self._production(tmp_path)).prepare_keys()

    def test_development_starts_with_a_generated_key(self, tmp_path: Path) -> None:
        resources = AuthResources(Settings(keys_dir=tmp_path, rsa_key_bits=2048))
        resources.prepare_keys()
        assert resources.keys.signing_key().is_development
