"""POST /auth/login and the OAuth 2.0 token endpoint."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from sqlalchemy import select

from auth_service.config import Settings
from auth_service.main import create_app
from auth_service.models import Credential
from servicekit.testing.plugin import serve_app
from tests.helpers import GOOD_PASSWORD, Registrar, new_email


def _assert_token_pair(response: httpx.Response, settings: Settings, user_id: str) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 900
    assert response.headers["cache-control"] == "no-store"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert header["kid"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user_id
    assert claims["iss"] == settings.jwt_issuer
    assert claims["aud"] == settings.jwt_audience
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["nbf"] <= time.time() + 1
    assert claims["jti"]
    assert claims["roles"] == ["user"]
    # The refresh token is opaque: nothing a client could parse.
    assert body["refresh_token"].count(".") == 0
    assert len(body["refresh_token"]) >= 43


class TestLogin:
    async def test_right_credentials_give_a_token_pair(
        self, client: httpx.AsyncClient, register: Registrar, settings: Settings
    ) -> None:
        user = await register()
        response = await client.post(
            "/auth/login", json={"email": f" {user['email'].upper()} ", "password": GOOD_PASSWORD}
        )
        _assert_token_pair(response, settings, user["id"])

    async def test_unknown_email_and_wrong_password_get_the_same_answer(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        headers = {"X-Request-ID": "same-request-id-for-both"}
        wrong_password = await client.post(
            "/auth/login",
            json={"email": user["email"], "password": "not-the-password-at-all"},
            headers=headers,
        )
        unknown_email = await client.post(
            "/auth/login",
            json={"email": new_email(), "password": "not-the-password-at-all"},
            headers=headers,
        )
        assert wrong_password.status_code == unknown_email.status_code == 401
        assert wrong_password.content == unknown_email.content
        assert wrong_password.json()["error"]["code"] == "invalid_credentials"
        assert wrong_password.headers["www-authenticate"].startswith("Bearer")
        assert wrong_password.headers.get("www-authenticate") == unknown_email.headers.get(
            "www-authenticate"
        )

    async def test_unknown_email_and_wrong_password_take_similar_time(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()

        async def timed(email: str) -> float:
            started = time.perf_counter()
            response = await client.post(
                "/auth/login", json={"email": email, "password": "not-the-password-at-all"}
            )
            assert response.status_code == 401
            return time.perf_counter() - started

        known = sorted([await timed(user["email"]) for _ in range(5)])[2]
        unknown = sorted([await timed(new_email()) for _ in range(5)])[2]
        # Both pay for one argon2 verification; skipping it would be ~10x faster.
        assert unknown > known * 0.5
        assert known > unknown * 0.5

    async def test_credentials_in_the_query_string_are_refused(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        query_only = await client.post(
            "/auth/login", params={"email": user["email"], "password": GOOD_PASSWORD}
        )
        with_body = await client.post(
            "/auth/login",
            params={"password": GOOD_PASSWORD},
            json={"email": user["email"], "password": GOOD_PASSWORD},
        )
        assert query_only.status_code in (400, 422)
        assert with_body.status_code == 400
        assert with_body.json()["error"]["code"] == "credentials_in_query"

    async def test_a_form_body_is_not_json(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        response = await client.post(
            "/auth/login", data={"email": user["email"], "password": GOOD_PASSWORD}
        )
        assert response.status_code == 415


class TestTokenEndpoint:
    async def test_password_grant(
        self, client: httpx.AsyncClient, register: Registrar, settings: Settings
    ) -> None:
        user = await register()
        response = await client.post(
            "/auth/token",
            data={
                "grant_type": "password",
                "username": user["email"],
                "password": GOOD_PASSWORD,
                "scope": "",
                "client_id": "swagger-ui",
            },
        )
        _assert_token_pair(response, settings, user["id"])

    async def test_refresh_token_grant(
        self, client: httpx.AsyncClient, register: Registrar, settings: Settings
    ) -> None:
        user = await register()
        first = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": user["email"], "password": GOOD_PASSWORD},
        )
        second = await client.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
        )
        _assert_token_pair(second, settings, user["id"])
        assert second.json()["refresh_token"] != first.json()["refresh_token"]

    async def test_wrong_password_is_invalid_grant(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        response = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": user["email"], "password": "wrong-wrong-1"},
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_grant"

    async def test_unknown_refresh_token_is_invalid_grant(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/auth/token", data={"grant_type": "refresh_token", "refresh_token": "nope"}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_grant"

    @pytest.mark.parametrize(
        ("data", "status", "code"),
        [
            ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
            ({"grant_type": "authorization_code", "code": "x"}, 400, "unsupported_grant_type"),
            ({"username": "a@example.com", "password": "x"}, 400, "invalid_request"),
            ({"grant_type": "password", "username": "a@example.com"}, 400, "invalid_request"),
            ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        ],
    )
    async def test_bad_requests_get_rfc_6749_errors(
        self, client: httpx.AsyncClient, data: dict[str, str], status: int, code: str
    ) -> None:
        response = await client.post("/auth/token", data=data)
        assert response.status_code == status
        assert response.json()["error"]["code"] == code

    async def test_credentials_in_the_query_string_are_refused(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        response = await client.post(
            "/auth/token",
            params={"grant_type": "password", "username": user["email"], "password": GOOD_PASSWORD},
        )
        assert response.status_code == 400

    async def test_swagger_ui_authorize_points_at_the_token_endpoint(
        self, client: httpx.AsyncClient
    ) -> None:
        spec = (await client.get("/auth/openapi.json")).json()
        schemes = spec["components"]["securitySchemes"]
        flows = [s["flows"]["password"]["tokenUrl"] for s in schemes.values() if "flows" in s]
        assert flows == ["/auth/token"]
        form = spec["paths"]["/auth/token"]["post"]["requestBody"]["content"]
        assert "application/x-www-form-urlencoded" in form

    async def test_an_access_token_from_it_opens_the_protected_endpoint(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        pair = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": user["email"], "password": GOOD_PASSWORD},
        )
        response = await client.get(
            "/auth/sessions", headers={"Authorization": f"Bearer {pair.json()['access_token']}"}
        )
        assert response.status_code == 200
        assert uuid.UUID(response.json()["items"][0]["id"])


class TestRehashOnLogin:
    async def test_a_hash_with_old_parameters_is_upgraded_at_the_next_login(
        self, settings: Settings
    ) -> None:
        # OWASP's other equivalent setting, as if the service had been configured so before.
        older = settings.model_copy(update={"argon2_memory_kib": 47104, "argon2_time_cost": 1})
        email = new_email()
        async with serve_app(create_app(older)) as client:
            await client.post(
                "/auth/register", json={"email": email, "password": GOOD_PASSWORD, "name": "Old"}
            )
        app = create_app(settings)
        async with serve_app(app) as client:
            login = await client.post(
                "/auth/login", json={"email": email, "password": GOOD_PASSWORD}
            )
            async with app.state.runtime.sessions() as session:
                stored = await session.scalar(
                    select(Credential.password_hash).where(Credential.email == email)
                )
            again = await client.post(
                "/auth/login", json={"email": email, "password": GOOD_PASSWORD}
            )
        assert login.status_code == 200
        assert stored is not None
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert again.status_code == 200
