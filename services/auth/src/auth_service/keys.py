"""Signing keys: RS256 private keys on disk (or in the environment), their JWKS, rotation.

Layout of the keys directory (shared by every instance): ``<kid>.pem`` (PKCS#8, mode 0600)
and ``<kid>.json`` (when it was created, when it starts signing, who made it). The JSON file is
written last, so a half-written key is never loaded. The kid is the key's RFC 7638 thumbprint.

Which key signs: the newest one whose ``active_from`` has passed. A rotated key is published
in the JWKS from its creation but signs only from ``active_from`` (pre-publication), and a
superseded key stays published until every token it signed has expired.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from servicekit.logging import get_logger

log = get_logger(__name__)

ALGORITHM = "RS256"
Origin = Literal["development", "operator", "environment"]
# Verifiers' clocks may run a little behind ours; keep keys published that much longer.
CLOCK_SKEW = timedelta(seconds=60)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NoSigningKeyError(RuntimeError):
    """No key is active for signing."""


class UnfitKeysError(RuntimeError):
    """The keys cannot be used in this environment (development keys in production)."""


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk_members(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The required public members of an RSA JWK (RFC 7518 §6.3.1)."""
    numbers = key.public_key().public_numbers()
    return {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}


def thumbprint(key: rsa.RSAPrivateKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of the key's public part."""
    canonical = json.dumps(public_jwk_members(key), separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """One private key and when it signs."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    created_at: datetime
    active_from: datetime
    origin: Origin

    @property
    def is_development(self) -> bool:
        """True for a key generated automatically for development."""
        return self.origin == "development"

    def public_jwk(self) -> dict[str, str]:
        """The public JWK as published (no private members)."""
        return {
            **public_jwk_members(self.private_key),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """Parse a PEM private key; only RSA keys of at least 2048 bits are accepted."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the signing key must be an RSA private key")
    if key.key_size < 2048:
        raise ValueError("the signing key must have at least 2048 bits")
    return key


def generate_key(*, bits: int, active_from: datetime, origin: Origin) -> SigningKey:
    """A new RSA key."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return SigningKey(
        kid=thumbprint(private_key),
        private_key=private_key,
        created_at=datetime.now(UTC),
        active_from=active_from,
        origin=origin,
    )


def _write_atomically(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class KeyStore:
    """The signing keys of this instance, reloaded from disk; pure apart from file access."""

    def __init__(
        self,
        *,
        directory: Path,
        access_token_ttl: timedelta,
        env_pem: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.directory = directory
        self.access_token_ttl = access_token_ttl
        self.clock = clock
        self._env_key: SigningKey | None = None
        if env_pem:
            private_key = load_private_key(env_pem.encode())
            self._env_key = SigningKey(
                kid=thumbprint(private_key),
                private_key=private_key,
                created_at=_EPOCH,
                active_from=_EPOCH,
                origin="environment",
            )
        self._keys: dict[str, SigningKey] = {}

    # --- reading ---------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)read the directory; keys already parsed are reused, removed ones dropped."""
        try:
            meta_paths = sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []
        except OSError as exc:
            log.warning("keys.directory_unreadable", reason=str(exc))
            return
        if not meta_paths and self._keys:
            # A vanished directory (an unmounted volume) must not take the keys away from a
            # running instance; deliberate removal takes effect at the next start.
            log.warning("keys.directory_empty", directory=str(self.directory))
            return
        found: dict[str, SigningKey] = {}
        for meta_path in meta_paths:
            key = self._read_key(meta_path)
            if key is not None:
                found[key.kid] = key
        added = sorted(set(found) - set(self._keys))
        if added:
            log.info("keys.loaded", kids=added)
        self._keys = found

    def _read_key(self, meta_path: Path) -> SigningKey | None:
        kid = meta_path.stem
        known = self._keys.get(kid)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            active_from = datetime.fromisoformat(meta["active_from"])
            if known is not None and known.active_from == active_from:
                return known
            private_key = load_private_key((self.directory / f"{kid}.pem").read_bytes())
            if thumbprint(private_key) != kid:
                raise ValueError("the key does not match its kid")
            return SigningKey(
                kid=kid,
                private_key=private_key,
                created_at=datetime.fromisoformat(meta["created_at"]),
                active_from=active_from,
                origin=meta.get("origin", "operator"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("keys.unreadable", kid=kid, reason=str(exc))
            return None

    @property
    def keys(self) -> list[SigningKey]:
        """Every loaded key, oldest activation first."""
        keys = list(self._keys.values())
        if self._env_key is not None:
            keys.append(self._env_key)
        return sorted(keys, key=lambda k: (k.active_from, k.created_at))

    def signing_key(self, now: datetime | None = None) -> SigningKey:
        """The key that signs now; raises NoSigningKeyError when there is none."""
        if self._env_key is not None:
            return self._env_key
        now = now or self.clock()
        active = [k for k in self.keys if k.active_from <= now]
        if not active:
            raise NoSigningKeyError("no signing key is active")
        return active[-1]

    def published(self, now: datetime | None = None) -> list[SigningKey]:
        """Keys verifiers need: pending, signing, or superseded with tokens still valid."""
        now = now or self.clock()
        try:
            current: SigningKey | None = self.signing_key(now)
        except NoSigningKeyError:
            current = None
        if self._env_key is not None:
            # The environment key signs; every key in the directory stays verifiable.
            return self.keys
        keys = self.keys
        published = []
        for index, key in enumerate(keys):
            if key is current or key.active_from > now:
                published.append(key)
                continue
            successors = [k.active_from for k in keys[index + 1 :] if k.active_from <= now]
            superseded_at = min(successors) if successors else now
            if superseded_at + self.access_token_ttl + CLOCK_SKEW > now:
                published.append(key)
        return published

    def jwks(self, now: datetime | None = None) -> dict[str, Any]:
        """The public JWKS document."""
        return {"keys": [key.public_jwk() for key in self.published(now)]}

    def production_problems(self, now: datetime | None = None) -> list[str]:
        """What makes these keys unfit for production."""
        problems = []
        try:
            self.signing_key(now)
        except NoSigningKeyError:
            problems.append(
                "no signing key; create one with `python -m auth_service.cli rotate-keys`"
            )
        development = [k.kid for k in self.published(now) if k.is_development]
        if development:
            problems.append(f"development keys are in use: {', '.join(development)}")
        return problems

    # --- writing (operator commands and development start-up) ------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / ".lock", "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _save(self, key: SigningKey) -> None:
        _write_atomically(self.directory / f"{key.kid}.pem", key.private_pem())
        meta = {
            "kid": key.kid,
            "alg": ALGORITHM,
            "created_at": key.created_at.isoformat(),
            "active_from": key.active_from.isoformat(),
            "origin": key.origin,
        }
        _write_atomically(self.directory / f"{key.kid}.json", json.dumps(meta).encode())

    def ensure_development_key(self, *, bits: int) -> SigningKey | None:
        """Create a development key when none signs yet; returns it (None if one existed)."""
        with self._locked():
            self.load()
            try:
                self.signing_key()
                return None
            except NoSigningKeyError:
                pass
            key = generate_key(bits=bits, active_from=self.clock(), origin="development")
            self._save(key)
            self.load()
            log.info("keys.development_key_created", kid=key.kid)
            return key

    def rotate(
        self, *, bits: int, activation_delay: timedelta, origin: Origin = "operator"
    ) -> tuple[SigningKey, list[str]]:
        """Add a key signing after ``activation_delay``; returns it and the pruned kids."""
        # With no key signing at all, the new one signs at once.
        with self._locked():
            self.load()
            now = self.clock()
            try:
                self.signing_key(now)
                active_from = now + activation_delay
            except NoSigningKeyError:
                active_from = now
            key = generate_key(bits=bits, active_from=active_from, origin=origin)
            self._save(key)
            self.load()
            pruned = self.prune(now)
            log.info("keys.rotated", kid=key.kid, active_from=active_from.isoformat())
            return key, pruned

    def prune(self, now: datetime | None = None) -> list[str]:
        """Delete the files of keys that are no longer published."""
        published = {k.kid for k in self.published(now)}
        pruned = []
        for kid in list(self._keys):
            if kid in published:
                continue
            for suffix in (".json", ".pem"):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / f"{kid}{suffix}").unlink()
            del self._keys[kid]
            pruned.append(kid)
        return pruned
