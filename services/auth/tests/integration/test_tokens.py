"""Access tokens: the attack matrix, independent verification, the JWKS and key rotation."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from auth_service import cli
from auth_service.config import Settings
from auth_service.main import create_app
from servicekit.testing.forgery import Forger
from servicekit.testing.plugin import serve_app
from tests.helpers import GOOD_PASSWORD, Registrar

PROTECTED = "/auth/sessions"


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await client.post("/auth/login", json={"email": email, "password": GOOD_PASSWORD})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


class TestJwtAttackMatrix:
    async def test_every_forged_or_broken_token_is_401(
        self, client: httpx.AsyncClient, register: Registrar, settings: Settings
    ) -> None:
        user = await register()
        pair = await _login(client, user["email"])
        forger = Forger.from_keys_dir(
            settings.keys_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        user_id = uuid.UUID(user["id"])

        control = await client.get(
            PROTECTED, headers={"Authorization": f"Bearer {forger.valid(user_id)}"}
        )
        assert control.status_code == 200, "the forger's valid token must pass, or nothing is shown"

        attacks = forger.attack_tokens(user_id, refresh_token=pair["refresh_token"])
        outcomes = {}
        for name, token in attacks.items():
            response = await client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"})
            outcomes[name] = response.status_code
            if response.status_code == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["error"]["code"] == "invalid_token"
        assert outcomes == dict.fromkeys(attacks, 401)

    @pytest.mark.parametrize(
        "authorization", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"]
    )
    async def test_missing_or_non_bearer_credentials_are_401(
        self, client: httpx.AsyncClient, authorization: str
    ) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        response = await client.get(PROTECTED, headers=headers)
        assert response.status_code == 401

    async def test_a_token_of_another_issuer_key_set_is_401(
        self, client: httpx.AsyncClient, token_minter: Any
    ) -> None:
        # The shared test minter's key is trusted by the other services' tests, never by auth.
        response = await client.get(PROTECTED, headers=token_minter.headers(uuid.uuid4()))
        assert response.status_code == 401


class TestIndependentVerification:
    async def test_joserfc_verifies_an_access_token_with_only_the_published_jwks(
        self, client: httpx.AsyncClient, register: Registrar, settings: Settings
    ) -> None:
        user = await register()
        token = (await _login(client, user["email"]))["access_token"]
        jwks = (await client.get("/.well-known/jwks.json")).json()

        key_set = KeySet.import_key_set(jwks)
        decoded = jose_jwt.decode(token, key_set, algorithms=["RS256"])
        jose_jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": settings.jwt_issuer},
            aud={"essential": True, "value": settings.jwt_audience},
            sub={"essential": True, "value": user["id"]},
            exp={"essential": True},
            nbf={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        ).validate(decoded.claims)
        assert decoded.header["typ"] == "at+jwt"
        assert decoded.header["kid"] in {k["kid"] for k in jwks["keys"]}
        assert decoded.claims["exp"] - decoded.claims["iat"] <= 900


class TestJwks:
    async def test_publishes_public_rsa_keys_only(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        keys = response.json()["keys"]
        assert keys
        for key in keys:
            assert {"kid", "kty", "alg", "use", "n", "e"} <= set(key)
            assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
            assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
        assert "max-age" in response.headers["cache-control"]

    async def test_is_served_outside_the_auth_prefix_and_documented(
        self, client: httpx.AsyncClient
    ) -> None:
        under_prefix = await client.get("/auth/.well-known/jwks.json")
        spec = (await client.get("/auth/openapi.json")).json()
        assert under_prefix.status_code == 404
        assert "/.well-known/jwks.json" in spec["paths"]


class TestKeyRotation:
    async def test_old_tokens_keep_working_new_ones_carry_the_new_kid(
        self,
        settings: Settings,
        tmp_path: Path,
        register: Registrar,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        own = settings.model_copy(update={"keys_dir": tmp_path / "keys"})
        async with serve_app(create_app(own)) as client:
            user = await register()
            before = await _login(client, user["email"])
            old_kid = _kid(before["access_token"])

            # The operator command, as run next to the service.
            monkeypatch.setenv("AUTH_KEYS_DIR", str(own.keys_dir))
            monkeypatch.setenv("AUTH_RSA_KEY_BITS", "2048")
            assert cli.main(["rotate-keys", "--now"]) == 0
            new_kid = await _wait_for_new_signing_kid(client, user["email"], old_kid)

            jwks = (await client.get("/.well-known/jwks.json")).json()
            old_still_works = await client.get(
                PROTECTED, headers={"Authorization": f"Bearer {before['access_token']}"}
            )
            after = await _login(client, user["email"])
            new_works = await client.get(
                PROTECTED, headers={"Authorization": f"Bearer {after['access_token']}"}
            )

        assert new_kid != old_kid
        assert _kid(after["access_token"]) == new_kid
        assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
        assert old_still_works.status_code == 200
        assert new_works.status_code == 200

    async def test_a_pending_key_is_published_before_it_signs(
        self,
        settings: Settings,
        tmp_path: Path,
        register: Registrar,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        own = settings.model_copy(update={"keys_dir": tmp_path / "keys"})
        async with serve_app(create_app(own)) as client:
            user = await register()
            old_kid = _kid((await _login(client, user["email"]))["access_token"])
            monkeypatch.setenv("AUTH_KEYS_DIR", str(own.keys_dir))
            monkeypatch.setenv("AUTH_RSA_KEY_BITS", "2048")
            monkeypatch.setenv("AUTH_KEY_ACTIVATION_DELAY_SECONDS", "3600")
            assert cli.main(["rotate-keys"]) == 0
            jwks = await _wait_for_key_count(client, 2)
            still_old = _kid((await _login(client, user["email"]))["access_token"])
        assert old_kid in {k["kid"] for k in jwks["keys"]}
        assert still_old == old_kid

    async def test_another_instance_picks_up_the_rotated_key(
        self, settings: Settings, tmp_path: Path, register: Registrar
    ) -> None:
        own = settings.model_copy(update={"keys_dir": tmp_path / "keys"})
        first, second = create_app(own), create_app(own)
        async with serve_app(first) as one, serve_app(second) as two:
            user = await register()
            token = (await _login(one, user["email"]))["access_token"]
            assert (
                await two.get(PROTECTED, headers={"Authorization": f"Bearer {token}"})
            ).status_code == 200
            first.state.auth.keys.rotate(bits=2048, activation_delay=timedelta(0))
            await first.state.auth.reload_keys()
            rotated = (await _login(one, user["email"]))["access_token"]
            # The second instance learns the key from the shared directory within a reload.
            deadline = time.monotonic() + 5
            while True:
                response = await two.get(PROTECTED, headers={"Authorization": f"Bearer {rotated}"})
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        assert _kid(rotated) != _kid(token)
        assert response.status_code == 200


async def _wait_for_new_signing_kid(client: httpx.AsyncClient, email: str, old_kid: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kid = _kid((await _login(client, email))["access_token"])
        if kid != old_kid:
            return kid
        await asyncio.sleep(0.1)
    raise AssertionError("the rotated key never signed")


async def _wait_for_key_count(client: httpx.AsyncClient, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        jwks = (await client.get("/.well-known/jwks.json")).json()
        if len(jwks["keys"]) == count:
            return dict(jwks)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the JWKS never listed {count} keys: {json.dumps(jwks)}")
