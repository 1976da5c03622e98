"""Access tokens (RFC 9068 JWTs signed RS256) and opaque refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jwt

from auth_service.keys import ALGORITHM, KeyStore, NoSigningKeyError
from servicekit.errors import ServiceUnavailable

ACCESS_TOKEN_TYPE = "at+jwt"
REFRESH_TOKEN_BYTES = 32


@dataclass(frozen=True)
class AccessToken:
    """A signed access token and the facts about it the service keeps."""

    token: str = field(repr=False)
    jti: str
    kid: str
    expires_at: datetime
    expires_in: int


class TokenIssuer:
    """Signs access tokens with the key store's current key."""

    def __init__(self, *, keys: KeyStore, issuer: str, audience: str, ttl: timedelta) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    def issue(self, *, user_id: uuid.UUID, roles: Iterable[str]) -> AccessToken:
        """A new access token for the user."""
        try:
            key = self.keys.signing_key()
        except NoSigningKeyError:
            raise ServiceUnavailable("No signing key is available.") from None
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = now + self.ttl
        jti = uuid.uuid4().hex
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": jti,
            "roles": sorted(set(roles)),
        }
        token = jwt.encode(
            claims,
            key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )
        return AccessToken(
            token=token,
            jti=jti,
            kid=key.kid,
            expires_at=expires_at,
            expires_in=int(self.ttl.total_seconds()),
        )


def new_refresh_token() -> str:
    """An opaque refresh token with 256 bits of randomness."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def hash_refresh_token(token: str) -> bytes:
    """What the database stores instead of the token (its SHA-256)."""
    return hashlib.sha256(token.encode("utf-8")).digest()
