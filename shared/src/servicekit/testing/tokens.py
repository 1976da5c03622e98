"""Signing keys and access tokens for tests of services that verify auth's tokens."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "urn:shop:auth"
AUDIENCE = "urn:shop:api"


def access_claims(
    user_id: uuid.UUID | str, *, issuer: str, audience: str, ttl: int, roles: Iterable[str]
) -> dict[str, Any]:
    """The claims auth puts in an access token issued now."""
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": str(user_id),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "roles": list(roles),
    }


class TokenMinter:
    """Mints RS256 access tokens shaped like auth's, with its JWKS written to a file."""

    def __init__(self, directory: Path, *, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        public.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        self.jwks: dict[str, Any] = {"keys": [public]}
        self.jwks_path = directory / f"jwks-{self.kid}.json"
        self.jwks_path.write_text(json.dumps(self.jwks))

    def claims(
        self, user_id: uuid.UUID, roles: Iterable[str] = (), ttl: int = 600
    ) -> dict[str, Any]:
        """The claims auth puts in an access token."""
        return access_claims(
            user_id, issuer=self.issuer, audience=self.audience, ttl=ttl, roles=roles
        )

    def mint(
        self,
        user_id: uuid.UUID | None = None,
        *,
        roles: Iterable[str] = (),
        ttl: int = 600,
        **overrides: Any,
    ) -> str:
        """A signed access token; ``overrides`` replace or add claims (None removes one)."""
        claims = self.claims(user_id or uuid.uuid4(), roles, ttl)
        for key, value in overrides.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        return jwt.encode(
            claims, self.private_key, algorithm="RS256", headers={"kid": self.kid, "typ": "at+jwt"}
        )

    def headers(self, user_id: uuid.UUID, *, roles: Iterable[str] = ()) -> dict[str, str]:
        """An Authorization header for a fresh token of ``user_id``."""
        return {"Authorization": f"Bearer {self.mint(user_id, roles=roles)}"}
