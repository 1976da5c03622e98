"""Access tokens are verified offline; anything forged, stale or foreign is a 401."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import Depends, FastAPI, Request
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from servicekit.errors import ServiceUnavailable, Unauthorized, install_error_handlers
from servicekit.security import (
    InvalidToken,
    JwksCache,
    Principal,
    TokenVerifier,
    bearer_dependency,
)

ISSUER = "urn:shop:auth"
AUDIENCE = "urn:shop:api"
JWKS_URL = "http://auth.test/.well-known/jwks.json"


class SigningKey:
    """A private key of auth and the public JWK it publishes."""

    def __init__(self, kid: str, alg: str) -> None:
        self.kid = kid
        self.alg = alg
        if alg == "RS256":
            rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.private: Any = rsa_key
            jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
        else:
            ed_key = ed25519.Ed25519PrivateKey.generate()
            self.private = ed_key
            jwk = OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True)
        self.jwk: dict[str, Any] = {**jwk, "kid": kid, "alg": alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"kid": self.kid, "typ": "at+jwt", **header}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.UUID(int=7)),
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": "jti-1",
        "roles": ["user"],
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey("rsa-1", "RS256")


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return SigningKey("ed-1", "EdDSA")


@pytest.fixture
def jwks(rsa_key: SigningKey, ed_key: SigningKey) -> JwksCache:
    cache = JwksCache()
    cache.set_jwks({"keys": [rsa_key.jwk, ed_key.jwk]})
    return cache


@pytest.fixture
def verifier(jwks: JwksCache) -> TokenVerifier:
    return TokenVerifier(jwks=jwks, issuer=ISSUER, audience=AUDIENCE)


async def assert_rejected(verifier: TokenVerifier, token: str) -> InvalidToken:
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(token)
    error = caught.value
    assert isinstance(error, InvalidToken)
    assert error.status_code == 401
    assert error.code == "invalid_token"
    assert error.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    return error


class TestValidTokens:
    async def test_rs256_token_gives_the_principal(
        self, verifier: TokenVerifier, rsa_key: SigningKey
    ) -> None:
        token = rsa_key.sign(claims(roles=["user", "admin"]))

        principal = await verifier.verify(token)

        assert principal.user_id == uuid.UUID(int=7)
        assert principal.roles == frozenset({"user", "admin"})
        assert principal.is_admin
        assert principal.jti == "jti-1"
        assert principal.token == token
        assert principal.expires_at.tzinfo is not None
        assert token not in repr(principal)

    async def test_eddsa_token_is_accepted(
        self, verifier: TokenVerifier, ed_key: SigningKey
    ) -> None:
        principal = await verifier.verify(ed_key.sign(claims()))

        assert principal.user_id == uuid.UUID(int=7)
        assert not principal.is_admin

    async def test_application_at_jwt_type_is_accepted(
        self, verifier: TokenVerifier, rsa_key: SigningKey
    ) -> None:
        await verifier.verify(rsa_key.sign(claims(), typ="application/at+jwt"))

    async def test_a_token_without_roles_has_none(
        self, verifier: TokenVerifier, rsa_key: SigningKey
    ) -> None:
        principal = await verifier.verify(rsa_key.sign(claims(roles=None)))

        assert principal.roles == frozenset()


class TestRejectedTokens:
    async def test_alg_none(self, verifier: TokenVerifier) -> None:
        token = unsigned({"alg": "none", "typ": "at+jwt", "kid": "rsa-1"}, claims()) + "."

        await assert_rejected(verifier, token)

    async def test_hs256_signed_with_the_public_key(
        self, verifier: TokenVerifier, rsa_key: SigningKey
    ) -> None:
        signing_input = unsigned({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}, claims())
        mac = hmac.new(rsa_key.public_pem(), signing_input.encode(), hashlib.sha256).digest()

        await assert_rejected(verifier, f"{signing_input}.{b64(mac)}")

    async def test_header_alg_not_matching_the_key(
        self, verifier: TokenVerifier, ed_key: SigningKey, rsa_key: SigningKey
    ) -> None:
        token = ed_key.sign(claims(), kid="rsa-1")

        await assert_rejected(verifier, token)

    async def test_signed_by_a_key_that_is_not_published(self, verifier: TokenVerifier) -> None:
        impostor = SigningKey("rsa-1", "RS256")

        await assert_rejected(verifier, impostor.sign(claims()))

    async def test_unknown_kid(self, verifier: TokenVerifier) -> None:
        stranger = SigningKey("rsa-unknown", "RS256")

        await assert_rejected(verifier, stranger.sign(claims()))

    async def test_missing_kid(self, verifier: TokenVerifier, rsa_key: SigningKey) -> None:
        token = jwt.encode(claims(), rsa_key.private, algorithm="RS256", headers={"typ": "at+jwt"})

        await assert_rejected(verifier, token)

    async def test_tampered_payload(self, verifier: TokenVerifier, rsa_key: SigningKey) -> None:
        header, _, signature = rsa_key.sign(claims()).split(".")
        forged = b64(json.dumps(claims(roles=["admin"])).encode())

        await assert_rejected(verifier, f"{header}.{forged}.{signature}")

    async def test_expired(self, verifier: TokenVerifier, rsa_key: SigningKey) -> None:
        now = int(time.time())
        token = rsa_key.sign(claims(iat=now - 1000, nbf=now - 1000, exp=now - 10))

        error = await assert_rejected(verifier, token)

        assert "expired" in error.message

    async def test_not_yet_valid(self, verifier: TokenVerifier, rsa_key: SigningKey) -> None:
        await assert_rejected(verifier, rsa_key.sign(claims(nbf=int(time.time()) + 600)))

    async def test_wrong_issuer(self, verifier: TokenVerifier, rsa_key: SigningKey) -> None:
        await assert_rejected(verifier, rsa_key.sign(claims(iss="urn:evil:auth")))

    async def test_wrong_audience(self, verifier: TokenVerifier, rsa_key: SigningKey) -> None:
        await assert_rejected(verifier, rsa_key.sign(claims(aud="urn:other:api")))

    @pytest.mark.parametrize("claim", ["sub", "exp", "iat", "nbf", "iss", "aud", "jti"])
    async def test_missing_required_claim(
        self, verifier: TokenVerifier, rsa_key: SigningKey, claim: str
    ) -> None:
        await assert_rejected(verifier, rsa_key.sign(claims(**{claim: None})))

    async def test_subject_that_is_not_a_user_id(
        self, verifier: TokenVerifier, rsa_key: SigningKey
    ) -> None:
        await assert_rejected(verifier, rsa_key.sign(claims(sub="42")))

    async def test_roles_that_are_not_a_list_of_strings(
        self, verifier: TokenVerifier, rsa_key: SigningKey
    ) -> None:
        await assert_rejected(verifier, rsa_key.sign(claims(roles="admin")))

    @pytest.mark.parametrize("typ", ["refresh", "JWT", None])
    async def test_not_an_access_token(
        self, verifier: TokenVerifier, rsa_key: SigningKey, typ: str | None
    ) -> None:
        await assert_rejected(verifier, rsa_key.sign(claims(), typ=typ))

    @pytest.mark.parametrize("garbage", ["", "not-a-token", "a.b.c", "Bearer x", "....", "é.é.é"])
    async def test_garbage(self, verifier: TokenVerifier, garbage: str) -> None:
        await assert_rejected(verifier, garbage)

    async def test_revoked_token(self, jwks: JwksCache, rsa_key: SigningKey) -> None:
        seen: list[Principal] = []

        async def is_revoked(principal: Principal) -> bool:
            seen.append(principal)
            return principal.jti == "jti-revoked"

        verifier = TokenVerifier(jwks=jwks, issuer=ISSUER, audience=AUDIENCE, is_revoked=is_revoked)

        await verifier.verify(rsa_key.sign(claims()))
        error = await assert_rejected(verifier, rsa_key.sign(claims(jti="jti-revoked")))

        assert "revoked" in error.message
        assert [principal.jti for principal in seen] == ["jti-1", "jti-revoked"]

    def test_symmetric_algorithms_cannot_be_allowed(self, jwks: JwksCache) -> None:
        with pytest.raises(ValueError):
            TokenVerifier(jwks=jwks, issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256"])


class JwksServer:
    """Auth's JWKS endpoint, served in process; counts fetches."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.down:
            return httpx.Response(503)
        return httpx.Response(200, json={"keys": [key.jwk for key in self.keys]})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestJwksCache:
    async def test_keys_are_fetched_on_first_use_and_cached(self, rsa_key: SigningKey) -> None:
        server = JwksServer(rsa_key)
        async with server.client() as http:
            cache = JwksCache(url=JWKS_URL, http_client=http)
            verifier = TokenVerifier(jwks=cache, issuer=ISSUER, audience=AUDIENCE)

            for _ in range(3):
                await verifier.verify(rsa_key.sign(claims()))

        assert server.fetches == 1

    async def test_a_rotated_key_is_picked_up_on_its_first_token(
        self, rsa_key: SigningKey, ed_key: SigningKey
    ) -> None:
        server = JwksServer(rsa_key)
        clock = FakeClock()
        async with server.client() as http:
            cache = JwksCache(url=JWKS_URL, http_client=http, clock=clock)
            verifier = TokenVerifier(jwks=cache, issuer=ISSUER, audience=AUDIENCE)
            await verifier.verify(rsa_key.sign(claims()))

            server.keys.append(ed_key)
            clock.now += 60
            principal = await verifier.verify(ed_key.sign(claims()))

        assert principal.user_id == uuid.UUID(int=7)
        assert server.fetches == 2

    async def test_unknown_kids_do_not_hammer_auth(self, rsa_key: SigningKey) -> None:
        server = JwksServer(rsa_key)
        clock = FakeClock()
        stranger = SigningKey("rsa-unknown", "RS256")
        async with server.client() as http:
            cache = JwksCache(url=JWKS_URL, http_client=http, clock=clock)
            verifier = TokenVerifier(jwks=cache, issuer=ISSUER, audience=AUDIENCE)
            await verifier.verify(rsa_key.sign(claims()))

            clock.now += 60
            for _ in range(5):
                await assert_rejected(verifier, stranger.sign(claims()))
            assert server.fetches == 2

            clock.now += 10
            await assert_rejected(verifier, stranger.sign(claims()))

        assert server.fetches == 3

    async def test_concurrent_lookups_of_a_new_kid_share_one_fetch(
        self, rsa_key: SigningKey
    ) -> None:
        server = JwksServer(rsa_key)
        async with server.client() as http:
            cache = JwksCache(url=JWKS_URL, http_client=http)
            keys = await asyncio.gather(*(cache.get_key("rsa-1") for _ in range(10)))

        assert {key.key_id for key in keys} == {"rsa-1"}
        assert server.fetches == 1

    async def test_keys_can_come_from_a_file(self, tmp_path: Path, rsa_key: SigningKey) -> None:
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps({"keys": [rsa_key.jwk]}))
        cache = JwksCache(file=str(path))
        verifier = TokenVerifier(jwks=cache, issuer=ISSUER, audience=AUDIENCE)

        principal = await verifier.verify(rsa_key.sign(claims()))

        assert principal.jti == "jti-1"

    async def test_unreachable_keys_are_a_503_not_a_401(self, rsa_key: SigningKey) -> None:
        server = JwksServer(rsa_key)
        server.down = True
        async with server.client() as http:
            cache = JwksCache(url=JWKS_URL, http_client=http)
            verifier = TokenVerifier(jwks=cache, issuer=ISSUER, audience=AUDIENCE)

            with pytest.raises(ServiceUnavailable):
                await verifier.verify(rsa_key.sign(claims()))
            with pytest.raises(ServiceUnavailable):
                await verifier.verify(rsa_key.sign(claims()))

        assert server.fetches == 1

    def test_symmetric_and_encryption_keys_are_ignored(self, rsa_key: SigningKey) -> None:
        cache = JwksCache()
        cache.set_jwks(
            {
                "keys": [
                    {"kty": "oct", "kid": "hmac", "k": b64(b"secret"), "alg": "HS256"},
                    {**rsa_key.jwk, "kid": "enc", "use": "enc"},
                    {"kty": "RSA", "kid": "broken"},
                    rsa_key.jwk,
                ]
            }
        )

        assert cache.kids == frozenset({"rsa-1"})


def make_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    app.state.verifier = verifier
    install_error_handlers(app)

    def get_verifier(request: Request) -> TokenVerifier:
        verifier: TokenVerifier = request.app.state.verifier
        return verifier

    current_user = bearer_dependency(get_verifier)

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(current_user)]) -> dict[str, str]:
        return {"user_id": str(principal.user_id)}

    return app


@pytest.fixture
def http(verifier: TokenVerifier) -> Callable[[], httpx.AsyncClient]:
    app = make_app(verifier)
    return lambda: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


class TestBearerDependency:
    async def test_a_valid_bearer_token_reaches_the_route(
        self, http: Callable[[], httpx.AsyncClient], rsa_key: SigningKey
    ) -> None:
        async with http() as client:
            response = await client.get(
                "/me", headers={"Authorization": f"Bearer {rsa_key.sign(claims())}"}
            )

        assert response.status_code == 200
        assert response.json() == {"user_id": str(uuid.UUID(int=7))}

    @pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwdw==", "Bearer", "Bearer "])
    async def test_no_bearer_token_is_401_not_authenticated(
        self, http: Callable[[], httpx.AsyncClient], authorization: str | None
    ) -> None:
        headers = {"Authorization": authorization} if authorization is not None else {}
        async with http() as client:
            response = await client.get("/me", headers=headers)

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "not_authenticated"

    async def test_a_bad_token_is_401_invalid_token(
        self, http: Callable[[], httpx.AsyncClient]
    ) -> None:
        async with http() as client:
            response = await client.get("/me", headers={"Authorization": "Bearer nonsense"})

        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert response.json()["error"]["code"] == "invalid_token"

    async def test_swagger_can_authorize_against_the_token_endpoint(
        self, http: Callable[[], httpx.AsyncClient]
    ) -> None:
        async with http() as client:
            schema = (await client.get("/openapi.json")).json()

        [scheme] = schema["components"]["securitySchemes"].values()
        assert scheme["type"] == "oauth2"
        assert scheme["flows"]["password"]["tokenUrl"] == "/auth/token"
        assert schema["paths"]["/me"]["get"]["security"]
