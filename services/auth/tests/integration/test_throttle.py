"""Login throttling on the real Redis, and without it."""

from __future__ import annotations

import httpx
import pytest

from auth_service.config import Settings
from auth_service.main import create_app
from servicekit.testing.plugin import serve_app
from tests.helpers import GOOD_PASSWORD, Registrar, new_address, new_email

DEAD_REDIS = "redis://127.0.0.1:1/0"


async def _login(
    client: httpx.AsyncClient, email: str, password: str, address: str, path: str = "/auth/login"
) -> httpx.Response:
    headers = {"X-Forwarded-For": address}
    if path == "/auth/token":
        data = {"grant_type": "password", "username": email, "password": password}
        return await client.post(path, data=data, headers=headers)
    return await client.post(path, json={"email": email, "password": password}, headers=headers)


class TestLoginThrottle:
    @pytest.mark.parametrize("path", ["/auth/login", "/auth/token"])
    async def test_failed_logins_for_one_email_get_429_with_retry_after(
        self, settings: Settings, register: Registrar, path: str
    ) -> None:
        strict = settings.model_copy(
            update={"login_email_max_failures": 3, "login_failure_window_seconds": 120}
        )
        async with serve_app(create_app(strict)) as client:
            user = await register()
            # From different addresses: the per-email limit alone must engage.
            failures = [
                await _login(client, user["email"], "wrong-password-000", new_address(), path)
                for _ in range(3)
            ]
            blocked = await _login(client, user["email"], GOOD_PASSWORD, new_address(), path)
            other_user = await register()
            unaffected = await _login(client, other_user["email"], GOOD_PASSWORD, new_address())

        assert [r.status_code for r in failures] == [401, 401, 401]
        # Even the right password is refused while the limit holds (no guessing oracle).
        assert blocked.status_code == 429
        assert blocked.json()["error"]["code"] == "too_many_login_attempts"
        assert 1 <= int(blocked.headers["retry-after"]) <= 120
        assert unaffected.status_code == 200

    async def test_instances_share_the_counters_through_redis(
        self, settings: Settings, register: Registrar
    ) -> None:
        strict = settings.model_copy(update={"login_email_max_failures": 2})
        async with (
            serve_app(create_app(strict)) as one,
            serve_app(create_app(strict)) as two,
        ):
            user = await register()
            first = await _login(one, user["email"], "wrong-password-000", new_address())
            second = await _login(two, user["email"], "wrong-password-000", new_address())
            third = await _login(one, user["email"], GOOD_PASSWORD, new_address())
        assert [first.status_code, second.status_code] == [401, 401]
        assert third.status_code == 429

    async def test_failed_logins_from_one_address_get_429(
        self, settings: Settings, register: Registrar
    ) -> None:
        strict = settings.model_copy(
            update={"login_address_max_failures": 4, "login_failure_window_seconds": 60}
        )
        address = new_address()
        async with serve_app(create_app(strict)) as client:
            statuses = [
                (await _login(client, new_email(), "wrong-password-000", address)).status_code
                for _ in range(4)
            ]
            user = await register()
            blocked = await _login(client, user["email"], GOOD_PASSWORD, address)
            elsewhere = await _login(client, user["email"], GOOD_PASSWORD, new_address())
        assert statuses == [401, 401, 401, 401]
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert elsewhere.status_code == 200

    async def test_successful_logins_do_not_count(
        self, settings: Settings, register: Registrar
    ) -> None:
        strict = settings.model_copy(update={"login_address_max_failures": 2})
        address = new_address()
        async with serve_app(create_app(strict)) as client:
            user = await register()
            statuses = [
                (await _login(client, user["email"], GOOD_PASSWORD, address)).status_code
                for _ in range(5)
            ]
        assert statuses == [200] * 5

    async def test_forwarded_addresses_are_ignored_from_an_untrusted_peer(
        self, settings: Settings, register: Registrar
    ) -> None:
        # With no trusted proxy, X-Forwarded-For cannot be used to dodge the address limit.
        strict = settings.model_copy(
            update={"login_address_max_failures": 2, "trusted_proxies": []}
        )
        async with serve_app(create_app(strict)) as client:
            responses = [
                (await _login(client, new_email(), "wrong-password-000", new_address()))
                for _ in range(3)
            ]
        # The in-process client always comes from 127.0.0.1, shared with other tests, so
        # only the growth matters: the third attempt is over this app's limit of two.
        assert responses[-1].status_code == 429


class TestLoginWithoutRedis:
    async def test_login_works_and_is_still_throttled_with_redis_down(
        self, settings: Settings, register: Registrar
    ) -> None:
        no_redis = settings.model_copy(
            update={"redis_url": DEAD_REDIS, "login_email_max_failures": 2}
        )
        async with serve_app(create_app(no_redis)) as client:
            user = await register()
            ok = await _login(client, user["email"], GOOD_PASSWORD, new_address())
            ready = await client.get("/health/ready")
            failures = [
                await _login(client, user["email"], "wrong-password-000", new_address())
                for _ in range(2)
            ]
            blocked = await _login(client, user["email"], GOOD_PASSWORD, new_address())
        assert ok.status_code == 200
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"].startswith("fail")
        assert [r.status_code for r in failures] == [401, 401]
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1
