"""Access tokens signed like auth's, and forged or broken ones every verifier must refuse.

``Forger.from_keys_dir`` reads auth's signing key from its key directory, so it can make tokens
that are *correctly signed* but wrong in one respect (expired, wrong audience...), and valid
ones for any user without a login. ``attack_tokens`` (named in ``ATTACKS``) is the attack
matrix auth's own suite and the system's security suite both run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from servicekit.testing.tokens import AUDIENCE, ISSUER, access_claims


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def unsigned(header: dict[str, Any], claims: dict[str, Any], alg: str = "none") -> str:
    """A token with ``alg: none`` (or a spelling of it) and an empty signature."""
    return f"{_segment({**header, 'alg': alg})}.{_segment(claims)}."


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token signed with ``secret`` (libraries refuse to do this with a PEM key)."""
    signing_input = f"{_segment({**header, 'alg': 'HS256'})}.{_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def tamper(token: str, **claim_changes: Any) -> str:
    """Change claims of a signed token but keep its original signature."""
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims.update(claim_changes)
    return f"{header}.{_segment(claims)}.{signature}"


@dataclass
class Forger:
    """Signs tokens like auth does, with whatever key and claims a test wants."""

    private_key: rsa.RSAPrivateKey
    kid: str
    issuer: str = ISSUER
    audience: str = AUDIENCE

    @classmethod
    def from_keys_dir(cls, directory: Path, **kwargs: Any) -> Forger:
        """Use the newest key of an auth keys directory (``<kid>.pem`` + ``<kid>.json``)."""
        metas = [json.loads(p.read_text()) for p in directory.glob("*.json")]
        if not metas:
            raise AssertionError(f"no signing key in {directory}")
        newest = max(metas, key=lambda m: m["active_from"])
        pem = (directory / f"{newest['kid']}.pem").read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise AssertionError(f"{newest['kid']}.pem is not an RSA private key")
        return cls(private_key=key, kid=newest["kid"], **kwargs)

    @property
    def public_pem(self) -> bytes:
        """The public key as PEM (what an HMAC-confusion attacker would use as the secret)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def claims(self, user_id: uuid.UUID | str, ttl: int = 300, **overrides: Any) -> dict[str, Any]:
        """Auth-shaped claims; an override of None removes the claim."""
        claims = access_claims(
            user_id, issuer=self.issuer, audience=self.audience, ttl=ttl, roles=["user"]
        )
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def header(self, **overrides: Any) -> dict[str, Any]:
        """Auth-shaped header."""
        return {"alg": "RS256", "typ": "at+jwt", "kid": self.kid, **overrides}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        key: rsa.RSAPrivateKey | None = None,
        algorithm: str = "RS256",
        **header: Any,
    ) -> str:
        """Sign ``claims`` (with this forger's key unless another is given)."""
        headers = {"typ": "at+jwt", "kid": self.kid, **header}
        return jwt.encode(claims, key or self.private_key, algorithm=algorithm, headers=headers)

    def valid(self, user_id: uuid.UUID | str, *, roles: Iterable[str] = ("user",)) -> str:
        """A token every verifier must accept (for ``user_id``, with ``roles``)."""
        return self.sign(self.claims(user_id, roles=list(roles)))

    def attack_tokens(self, user_id: uuid.UUID | str, *, refresh_token: str) -> dict[str, str]:
        """Every token here must be refused with 401 (keys in the order of ``ATTACKS``)."""
        now = int(time.time())
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        good = self.valid(user_id)
        claims = self.claims
        return {
            "alg_none": unsigned(self.header(), claims(user_id)),
            "alg_none_capitalised": unsigned(self.header(), claims(user_id), alg="None"),
            "alg_none_uppercase": unsigned(self.header(), claims(user_id), alg="NONE"),
            "hs256_signed_with_the_public_key": hmac_signed(
                self.header(), claims(user_id), self.public_pem
            ),
            "key_not_in_jwks_with_a_known_kid": self.sign(claims(user_id), key=stranger),
            "unknown_kid": self.sign(
                claims(user_id), key=stranger, kid=f"attacker-{uuid.uuid4().hex[:8]}"
            ),
            "no_kid": jwt.encode(
                claims(user_id), self.private_key, algorithm="RS256", headers={"typ": "at+jwt"}
            ),
            "rs512_with_the_real_key": self.sign(claims(user_id), algorithm="RS512"),
            "not_an_access_token_typ": self.sign(claims(user_id), typ="JWT"),
            "tampered_roles": tamper(good, roles=["admin"]),
            "tampered_sub": tamper(good, sub=str(uuid.uuid4())),
            "tampered_exp": tamper(good, exp=now + 86_400),
            "expired": self.sign(claims(user_id, iat=now - 1200, nbf=now - 1200, exp=now - 300)),
            "not_yet_valid": self.sign(claims(user_id, nbf=now + 600, exp=now + 900)),
            "wrong_issuer": self.sign(claims(user_id, iss="https://evil.example")),
            "wrong_audience": self.sign(claims(user_id, aud="urn:other:api")),
            "missing_sub": self.sign(claims(user_id, sub=None)),
            "missing_exp": self.sign(claims(user_id, exp=None)),
            "missing_jti": self.sign(claims(user_id, jti=None)),
            "exp_out_of_range": self.sign(claims(user_id, exp=10**30)),
            "exp_not_a_number": self.sign(claims(user_id, exp="tomorrow")),
            "roles_not_a_list": self.sign(claims(user_id, roles="admin")),
            "sub_not_a_user_id": self.sign(claims(user_id, sub="admin")),
            "refresh_token_as_bearer": refresh_token,
            "garbage": "not-a-token",
            "three_garbage_segments": "aaa.bbb.ccc",
            "empty_signature": good.rsplit(".", 1)[0] + ".",
        }


ATTACKS = (
    "alg_none",
    "alg_none_capitalised",
    "alg_none_uppercase",
    "hs256_signed_with_the_public_key",
    "key_not_in_jwks_with_a_known_kid",
    "unknown_kid",
    "no_kid",
    "rs512_with_the_real_key",
    "not_an_access_token_typ",
    "tampered_roles",
    "tampered_sub",
    "tampered_exp",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_sub",
    "missing_exp",
    "missing_jti",
    "exp_out_of_range",
    "exp_not_a_number",
    "roles_not_a_list",
    "sub_not_a_user_id",
    "refresh_token_as_bearer",
    "garbage",
    "three_garbage_segments",
    "empty_signature",
)
"""The names of ``Forger.attack_tokens``, in its order (for parametrised tests)."""
