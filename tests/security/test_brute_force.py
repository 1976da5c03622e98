"""Password guessing through the gateway: throttled per account and per client address, with
Retry-After; and none of the secrets involved ever reaches a log file."""

from __future__ import annotations

import uuid

import httpx
import pytest
from e2e.support import System

from .helpers import PASSWORD, User, assert_error_envelope, client_from, new_email, register
from .running import ADDRESS_MAX_FAILURES, EMAIL_MAX_FAILURES

WINDOW_SECONDS = 900


def _assert_throttled(response: httpx.Response) -> None:
    error = assert_error_envelope(response, 429)
    assert error["code"] == "too_many_login_attempts"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW_SECONDS


@pytest.fixture(scope="module")
def victim(api: httpx.Client) -> User:
    return register(api, "Victim")


@pytest.fixture(scope="module")
def secrets_used() -> list[str]:
    """Every password and token the tests of this module send; none may be logged."""
    return []


def guesser(system: System, address: str) -> httpx.Client:
    """An attacker connecting from a loopback address of its own.

    nginx passes that address on as the client's, so each attacker has its own budget of
    failed logins and the rest of the suite keeps its own.
    """
    return client_from(system, address)


class TestGuessingOnePassword:
    def test_the_account_is_throttled_after_the_limit_even_for_the_right_password(
        self, system: System, victim: User, secrets_used: list[str]
    ) -> None:
        with guesser(system, "127.0.0.21") as attacker:
            self._guess(attacker, victim, secrets_used)

    def _guess(self, guesser: httpx.Client, victim: User, secrets_used: list[str]) -> None:
        for attempt in range(EMAIL_MAX_FAILURES):
            guess = f"guess-{attempt}-{uuid.uuid4().hex}"
            secrets_used.append(guess)
            response = guesser.post("/auth/login", json={"email": victim.email, "password": guess})
            assert_error_envelope(response, 401)
        secrets_used.append(victim.password)
        _assert_throttled(
            guesser.post("/auth/login", json={"email": victim.email, "password": victim.password})
        )
        # The OAuth token endpoint counts against the same account.
        form = {"grant_type": "password", "username": victim.email, "password": victim.password}
        _assert_throttled(guesser.post("/auth/token", data=form))

    def test_the_victims_open_session_keeps_working(self, api: httpx.Client, victim: User) -> None:
        assert api.get("/users/me", headers=victim.auth).status_code == 200


class TestGuessingManyAccounts:
    def test_one_address_is_throttled_across_accounts_and_cannot_hide_behind_headers(
        self, system: System, alice: User, secrets_used: list[str]
    ) -> None:
        with guesser(system, "127.0.0.22") as attacker:
            self._stuff(attacker, system, alice, secrets_used)

    def _stuff(
        self, guesser: httpx.Client, system: System, alice: User, secrets_used: list[str]
    ) -> None:
        for _ in range(ADDRESS_MAX_FAILURES):
            guess = f"stuffed-{uuid.uuid4().hex}"
            secrets_used.append(guess)
            response = guesser.post("/auth/login", json={"email": new_email(), "password": guess})
            assert_error_envelope(response, 401)
        _assert_throttled(
            guesser.post("/auth/login", json={"email": new_email(), "password": "another guess"})
        )
        # The gateway sets the client address itself; what the client claims is ignored.
        spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
        _assert_throttled(
            guesser.post(
                "/auth/login",
                json={"email": alice.email, "password": alice.password},
                headers=spoofed,
            )
        )
        # Another client logs in as usual.
        with client_from(system, "127.0.0.250") as other:
            response = other.post(
                "/auth/login", json={"email": alice.email, "password": alice.password}
            )
            assert response.status_code == 200, response.text


class TestSecretsStayOutOfLogs:
    def test_no_password_or_token_from_registration_login_or_guessing_is_logged(
        self, api: httpx.Client, system: System, secrets_used: list[str]
    ) -> None:
        password = f"register-secret-{uuid.uuid4().hex}"
        email = new_email("logs")
        created = api.post(
            "/auth/register", json={"email": email, "password": password, "name": "L"}
        )
        assert created.status_code == 201, created.text
        login = api.post("/auth/login", json={"email": email, "password": password}).json()
        refreshed = api.post("/auth/refresh", json={"refresh_token": login["refresh_token"]}).json()
        token_form = {"grant_type": "password", "username": email, "password": password}
        assert api.post("/auth/token", data=token_form).status_code == 200
        wrong = f"wrong-secret-{uuid.uuid4().hex}"
        assert api.post("/auth/login", json={"email": email, "password": wrong}).status_code == 401
        # A credential in the query string is refused, and not logged either.
        leaked = f"query-secret-{uuid.uuid4().hex}"
        query = api.post(f"/auth/login?password={leaked}", json={"email": email, "password": wrong})
        assert query.status_code == 400
        secrets = [
            *secrets_used,
            PASSWORD,
            password,
            wrong,
            leaked,
            login["access_token"],
            login["refresh_token"],
            refreshed["access_token"],
            refreshed["refresh_token"],
        ]

        logs = {
            path.name: path.read_text(errors="replace")
            for path in (system.run_dir / "logs").glob("*.log")
        }
        assert "auth-1.log" in logs
        assert "/auth/login" in logs["auth-1.log"], "the login requests are not in auth's log"
        assert "/auth/login" in logs["gateway-access.log"]
        found = [
            (name, secret[:12])
            for name, text in logs.items()
            for secret in secrets
            if secret in text
        ]
        assert not found, f"secrets in logs: {found}"
