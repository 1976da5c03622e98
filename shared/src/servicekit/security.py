"""Offline verification of auth's access tokens (RFC 9068 JWTs) against its published JWKS."""

# No postponed annotations here: FastAPI must resolve the bearer dependency's signature,
# which refers to a closure variable.

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import jwt
from fastapi import Request
from fastapi.security import OAuth2PasswordBearer
from jwt import PyJWK

from servicekit.errors import ServiceUnavailable, Unauthorized
from servicekit.logging import get_logger

log = get_logger(__name__)

ADMIN_ROLE = "admin"
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti")
TOKEN_URL = "/auth/token"
# Symmetric keys never belong in a public key set; accepting one would allow forged tokens.
_ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})


class InvalidToken(Unauthorized):
    """401: the access token is malformed, forged, expired, revoked or not for us."""

    code = "invalid_token"
    message = "The access token is invalid."
    bearer_error = "invalid_token"


class NotAuthenticated(Unauthorized):
    """401: no bearer token was sent."""

    code = "not_authenticated"
    message = "An access token is required."


class UnknownKeyError(LookupError):
    """The key set has no usable key with this id, even after a refresh."""


class JwksUnavailableError(RuntimeError):
    """The key set could not be loaded."""


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    user_id: UUID
    roles: frozenset[str]
    jti: str
    expires_at: datetime
    token: str = field(repr=False)  # never in logs or tracebacks
    issued_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        """True when the caller has the admin role."""
        return ADMIN_ROLE in self.roles


def parse_jwks(jwks: Mapping[str, Any]) -> dict[str, PyJWK]:
    """Return the usable signing keys of a JWKS document, by kid."""
    raw_keys = jwks.get("keys")
    if not isinstance(raw_keys, list):
        raise ValueError("a JWKS document needs a 'keys' list")
    keys: dict[str, PyJWK] = {}
    for raw in raw_keys:
        if not isinstance(raw, dict):
            continue
        kid = raw.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if raw.get("kty") not in _ASYMMETRIC_KEY_TYPES or raw.get("use", "sig") != "sig":
            continue
        try:
            keys[kid] = PyJWK(raw)
        except jwt.PyJWTError as exc:
            log.warning("jwks.key_skipped", kid=kid, reason=str(exc))
    return keys


class JwksCache:
    """Public keys by kid, from a file or URL, refreshed (rate-limited) on an unknown kid."""

    def __init__(
        self,
        *,
        url: str | None = None,
        file: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        min_refresh_interval: float = 10.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.file = file
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self._http_client = http_client
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        # Changes whenever the key set is replaced: verifiers forget what they verified before.
        self.generation = 0

    @property
    def kids(self) -> frozenset[str]:
        """The key ids currently known."""
        return frozenset(self._keys)

    def set_jwks(self, jwks: Mapping[str, Any]) -> None:
        """Replace the known keys with those of a JWKS document."""
        self._keys = parse_jwks(jwks)
        self.generation += 1

    async def get_key(self, kid: str) -> PyJWK:
        """Return the key ``kid``, refreshing once if unknown; raise UnknownKeyError if absent."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            # Whoever held the lock before us may have fetched it already.
            key = self._keys.get(kid)
            if key is not None:
                return key
            if self._may_refresh():
                await self.refresh()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._keys and self._last_attempt is not None:
            raise JwksUnavailableError("no signing keys loaded")
        raise UnknownKeyError(kid)

    def _may_refresh(self) -> bool:
        if self.url is None and self.file is None:
            return False
        return (
            self._last_attempt is None
            or self._clock() - self._last_attempt >= self.min_refresh_interval
        )

    async def refresh(self) -> None:
        """Reload the key set from its source; raise JwksUnavailableError when that fails."""
        self._last_attempt = self._clock()
        try:
            document = await self._fetch()
            keys = parse_jwks(document)
        except (OSError, ValueError, httpx.HTTPError) as exc:
            log.warning("jwks.refresh_failed", source=self.file or self.url, reason=str(exc))
            raise JwksUnavailableError(str(exc)) from exc
        self._keys = keys
        self.generation += 1
        log.info("jwks.refreshed", source=self.file or self.url, kids=sorted(keys))

    async def _fetch(self) -> Any:
        if self.file is not None:
            content = await asyncio.to_thread(Path(self.file).read_text, encoding="utf-8")
            return json.loads(content)
        if self.url is None:
            raise ValueError("no JWKS source configured")
        if self._http_client is not None:
            response = await self._http_client.get(self.url, timeout=self.timeout)
        else:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.url)
        response.raise_for_status()
        return response.json()


class TokenVerifier:
    """Verify access tokens: pinned algorithms, known kid, typ at+jwt, iss, aud, times.

    A client sends the same token with every request until it expires, and checking its
    signature is most of what an authenticated read costs, so tokens that passed are remembered
    (bounded, by their exact text) until they expire or the key set changes. Revocation is still
    checked on every request.
    """

    def __init__(
        self,
        *,
        jwks: JwksCache,
        issuer: str,
        audience: str,
        algorithms: Sequence[str] = ("RS256", "EdDSA"),
        leeway: float = 0,
        is_revoked: Callable[[Principal], Awaitable[bool]] | None = None,
        remembered_tokens: int = 10_000,
    ) -> None:
        forbidden = {alg for alg in algorithms if alg == "none" or alg.startswith("HS")}
        if forbidden:
            raise ValueError(f"algorithms must be asymmetric, not {sorted(forbidden)}")
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.leeway = leeway
        self.is_revoked = is_revoked
        self.remembered_tokens = remembered_tokens
        # token → (key set generation, exp, principal) of tokens that passed every check.
        self._verified: dict[str, tuple[int, float, Principal]] = {}

    async def verify(self, token: str) -> Principal:
        """Return the token's principal, or raise InvalidToken (a 401 Unauthorized)."""
        principal = self._remembered(token)
        if principal is None:
            principal = await self._verify_signed(token)
            self._remember(token, principal)
        if self.is_revoked is not None and await self.is_revoked(principal):
            raise _rejected("revoked", message="The access token has been revoked.")
        return principal

    def _remembered(self, token: str) -> Principal | None:
        entry = self._verified.get(token)
        if entry is None:
            return None
        generation, expires, principal = entry
        if generation == self.jwks.generation and time.time() < expires + self.leeway:
            return principal
        # Expired, or the keys changed: verify afresh (and reject with the precise reason).
        del self._verified[token]
        return None

    def _remember(self, token: str, principal: Principal) -> None:
        if self.remembered_tokens <= 0:
            return
        while len(self._verified) >= self.remembered_tokens:
            del self._verified[next(iter(self._verified))]  # the oldest
        expires = principal.expires_at.timestamp()
        self._verified[token] = (self.jwks.generation, expires, principal)

    async def _verify_signed(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _rejected("malformed", exc) from None

        alg = header.get("alg")
        if alg not in self.algorithms:
            raise _rejected("algorithm not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise _rejected("not an access token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _rejected("no kid")

        try:
            key = await self.jwks.get_key(kid)
        except UnknownKeyError:
            raise _rejected("unknown kid") from None
        except JwksUnavailableError:
            raise ServiceUnavailable("Token signing keys are unavailable.") from None
        if key.algorithm_name != alg:
            raise _rejected("algorithm does not match the key")

        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise _rejected("expired", message="The access token has expired.") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _rejected("invalid", exc) from None

        return _principal(claims, token)


def _principal(claims: Mapping[str, Any], token: str) -> Principal:
    try:
        user_id = UUID(str(claims["sub"]))
    except ValueError:
        raise _rejected("sub is not a user id") from None
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti:
        raise _rejected("jti is not a string")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise _rejected("roles is not a list of strings")
    exp = claims["exp"]
    if not isinstance(exp, int | float):
        raise _rejected("exp is not a number")
    iat = claims["iat"]
    if not isinstance(iat, int | float):
        raise _rejected("iat is not a number")
    try:
        expires_at, issued_at = datetime.fromtimestamp(exp, UTC), datetime.fromtimestamp(iat, UTC)
    except (OverflowError, OSError, ValueError):
        raise _rejected("exp or iat out of range") from None
    return Principal(
        user_id=user_id,
        roles=frozenset(roles),
        jti=jti,
        expires_at=expires_at,
        token=token,
        issued_at=issued_at,
    )


def _rejected(
    reason: str, exc: BaseException | None = None, *, message: str | None = None
) -> InvalidToken:
    log.info("auth.token_rejected", reason=reason, detail=str(exc) if exc else None)
    text = message or InvalidToken.message
    return InvalidToken(text, description=text)


BEARER_SCHEME_NAME = "OAuth2PasswordBearer"
"""The bearer scheme's name in every service's OpenAPI document (the name it has always had)."""


class _BearerPrincipal(OAuth2PasswordBearer):
    """The OAuth2 password-flow scheme (for the docs) that also verifies the token it reads.

    One dependency, not a scheme plus a verifier depending on it: every authenticated request
    resolves this, and each level of FastAPI dependencies costs per request.
    """

    def __init__(self, get_verifier: Callable[[Request], TokenVerifier], token_url: str) -> None:
        super().__init__(tokenUrl=token_url, auto_error=False, scheme_name=BEARER_SCHEME_NAME)
        self.get_verifier = get_verifier

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        token = await super().__call__(request)
        if not token:
            raise NotAuthenticated()
        return await self.get_verifier(request).verify(token)


def bearer_dependency(
    get_verifier: Callable[[Request], TokenVerifier], *, token_url: str = TOKEN_URL
) -> Callable[..., Awaitable[Principal]]:
    """Build a FastAPI dependency returning the verified Principal of the bearer token.

    It declares OAuth2 password flow at ``token_url`` so Swagger UI's Authorize works.
    """
    return _BearerPrincipal(get_verifier, token_url)
