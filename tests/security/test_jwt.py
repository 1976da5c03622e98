"""Forged, broken and misused access tokens against every service's protected endpoints.

Each service verifies tokens by itself, so each one must refuse every attack: 401 with a Bearer
challenge and the error envelope, never a 200 and never a 500.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from servicekit.testing.forgery import ATTACKS, Forger

from .helpers import User, assert_error_envelope

# One protected endpoint of each service, as a client reaches it through the gateway.
PROTECTED = {
    "users": "/users/me",
    "orders": "/orders",
    "payments": f"/payments?order_id={uuid.UUID(int=7)}",
    "notifications": "/notifications",
    "auth": "/auth/sessions",
}


@pytest.fixture(scope="module")
def attack_tokens(forger: Forger, alice: User) -> dict[str, str]:
    return forger.attack_tokens(alice.id, refresh_token=alice.refresh_token)


def _assert_refused(response: httpx.Response) -> None:
    assert_error_envelope(response, 401)
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.split(" ", 1)[0] == "Bearer", response.headers


class TestForgedTokens:
    @pytest.mark.parametrize("service", list(PROTECTED))
    def test_a_token_signed_by_auth_is_accepted(
        self, api: httpx.Client, forger: Forger, alice: User, service: str
    ) -> None:
        # The control: the same forger's honest token opens every endpoint, so each refusal
        # below is about the one thing that is wrong with the token.
        token = forger.valid(alice.id)
        response = api.get(PROTECTED[service], headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize("attack", ATTACKS)
    @pytest.mark.parametrize("service", list(PROTECTED))
    def test_is_refused_with_a_bearer_challenge(
        self, api: httpx.Client, attack_tokens: dict[str, str], service: str, attack: str
    ) -> None:
        response = api.get(
            PROTECTED[service], headers={"Authorization": f"Bearer {attack_tokens[attack]}"}
        )
        _assert_refused(response)

    @pytest.mark.parametrize("service", list(PROTECTED))
    def test_no_token_or_another_scheme_is_refused(self, api: httpx.Client, service: str) -> None:
        _assert_refused(api.get(PROTECTED[service]))
        _assert_refused(api.get(PROTECTED[service], headers={"Authorization": "Basic YTpi"}))
        _assert_refused(api.get(PROTECTED[service], headers={"Authorization": "Bearer"}))

    @pytest.mark.parametrize("service", list(PROTECTED))
    def test_a_token_in_the_query_string_is_not_accepted(
        self, api: httpx.Client, alice: User, service: str
    ) -> None:
        path = PROTECTED[service]
        separator = "&" if "?" in path else "?"
        response = api.get(f"{path}{separator}access_token={alice.access_token}")
        assert response.status_code in (400, 401), response.text
