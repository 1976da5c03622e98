"""Refresh-token rotation, reuse detection, logout and the caller's sessions."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from sqlalchemy import text

from auth_service.config import Settings
from auth_service.main import create_app
from servicekit.events import SessionRevoked
from servicekit.testing.plugin import serve_app
from tests.helpers import GOOD_PASSWORD, Registrar


async def _login(client: httpx.AsyncClient, email: str, user_agent: str = "pytest") -> Any:
    response = await client.post(
        "/auth/login",
        json={"email": email, "password": GOOD_PASSWORD},
        headers={"User-Agent": user_agent},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def _jti(pair: dict[str, Any]) -> str:
    return str(jwt.decode(pair["access_token"], options={"verify_signature": False})["jti"])


async def _refused_within(
    client: httpx.AsyncClient, pair: dict[str, Any], *, seconds: float
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await client.get("/auth/sessions", headers=_bearer(pair))
        if response.status_code == 401:
            return True
        await asyncio.sleep(0.05)
    return False


class TestRefresh:
    async def test_rotation_gives_a_new_pair_and_uses_up_the_old_token(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        first = await _login(client, user["email"])
        response = await client.post(
            "/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert response.status_code == 200
        second = response.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert _jti(second) != _jti(first)
        assert response.headers["cache-control"] == "no-store"
        assert (await client.get("/auth/sessions", headers=_bearer(second))).status_code == 200

    async def test_reuse_revokes_the_whole_family(
        self,
        settings: Settings,
        register: Registrar,
        client: httpx.AsyncClient,
        capture_events: Callable[..., Any],
    ) -> None:
        capture = await capture_events(settings.events_exchange, ["session.revoked"])
        user = await register()
        first = await _login(client, user["email"])
        second = (
            await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        ).json()

        reused = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        newest = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})

        assert reused.status_code == 401
        assert reused.json()["error"]["code"] == "invalid_grant"
        # The legitimate-looking newer token of the same family is dead too.
        assert newest.status_code == 401
        # And the access token that came with it is revoked everywhere...
        found = await capture.wait_for(
            "session.revoked", where=lambda d: d.jti == _jti(second), timeout=5
        )
        assert str(found[0][1].user_id) == user["id"]
        assert await _refused_within(client, second, seconds=2)
        # ...and the session is gone from the user's list.
        fresh = await _login(client, user["email"], "after-the-theft")
        listed = (await client.get("/auth/sessions", headers=_bearer(fresh))).json()["items"]
        assert [i["user_agent"] for i in listed] == ["after-the-theft"]

    async def test_reuse_does_not_touch_the_users_other_sessions(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        laptop = await _login(client, user["email"], "laptop")
        phone = await _login(client, user["email"], "phone")
        await client.post("/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
        await client.post("/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
        still = await client.post("/auth/refresh", json={"refresh_token": phone["refresh_token"]})
        assert still.status_code == 200

    async def test_concurrent_use_of_one_token_gives_one_pair_at_most(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        pair = await _login(client, user["email"])
        responses = await asyncio.gather(
            *(
                client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
                for _ in range(4)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) <= 1
        assert all(s in (200, 401) for s in statuses)

    async def test_unknown_and_malformed_tokens_are_401_or_422(
        self, client: httpx.AsyncClient
    ) -> None:
        unknown = await client.post("/auth/refresh", json={"refresh_token": "x" * 43})
        empty = await client.post("/auth/refresh", json={"refresh_token": ""})
        assert unknown.status_code == 401
        assert empty.status_code == 422

    async def test_the_session_ends_at_its_absolute_expiry(
        self, settings: Settings, register: Registrar
    ) -> None:
        short = settings.model_copy(
            update={"refresh_family_lifetime_seconds": 60, "refresh_token_idle_seconds": 60}
        )
        app = create_app(short)
        async with serve_app(app) as client:
            user = await register()
            pair = await _login(client, user["email"])
            # Age the whole family past its lifetime, as 61 seconds would.
            async with app.state.runtime.sessions() as session, session.begin():
                await session.execute(_AGE_FAMILIES, {"user_id": uuid.UUID(user["id"])})
            response = await client.post(
                "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
            )
        assert response.status_code == 401


_AGE_FAMILIES = text(
    "UPDATE refresh_families SET created_at = created_at - interval '61 seconds', "
    "expires_at = expires_at - interval '61 seconds' WHERE user_id = :user_id"
)


class TestLogout:
    async def test_logout_revokes_the_session_and_publishes_session_revoked(
        self,
        settings: Settings,
        register: Registrar,
        client: httpx.AsyncClient,
        capture_events: Callable[..., Any],
    ) -> None:
        capture = await capture_events(settings.events_exchange, ["session.revoked"])
        user = await register()
        pair = await _login(client, user["email"])
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})

        response = await client.post(
            "/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=_bearer(pair)
        )

        assert response.status_code == 204
        assert response.content == b""
        found = await capture.wait_for("session.revoked", where=lambda d: d.jti == claims["jti"])
        envelope, data = found[0]
        assert isinstance(data, SessionRevoked)
        assert str(data.user_id) == user["id"]
        assert int(data.expires_at.timestamp()) == claims["exp"]
        assert envelope.producer == "auth"
        refresh = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refresh.status_code == 401
        # The access token itself is refused too (auth's own denylist, fed by the event).
        assert await _refused_within(client, pair, seconds=1.5)

    async def test_logout_needs_an_access_token(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        pair = await _login(client, user["email"])
        response = await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        still = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert still.status_code == 200

    async def test_logout_cannot_revoke_someone_elses_session(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        alice = await _login(client, (await register())["email"])
        bob = await _login(client, (await register())["email"])
        response = await client.post(
            "/auth/logout", json={"refresh_token": alice["refresh_token"]}, headers=_bearer(bob)
        )
        assert response.status_code == 204
        alice_refresh = await client.post(
            "/auth/refresh", json={"refresh_token": alice["refresh_token"]}
        )
        assert alice_refresh.status_code == 200


class TestSessions:
    async def test_lists_active_sessions_newest_first_with_the_current_one_marked(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        await _login(client, user["email"], "first-device")
        second = await _login(client, user["email"], "second-device")
        response = await client.get("/auth/sessions", headers=_bearer(second))
        assert response.status_code == 200
        items = response.json()["items"]
        assert [i["user_agent"] for i in items] == ["second-device", "first-device"]
        assert [i["current"] for i in items] == [True, False]
        assert response.json()["next_cursor"] is None

    async def test_pagination_with_a_cursor(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        pairs = [await _login(client, user["email"], f"device-{i}") for i in range(3)]
        first = await client.get("/auth/sessions?limit=2", headers=_bearer(pairs[0]))
        cursor = first.json()["next_cursor"]
        second = await client.get(
            "/auth/sessions", params={"limit": 2, "cursor": cursor}, headers=_bearer(pairs[0])
        )
        agents = [i["user_agent"] for i in first.json()["items"] + second.json()["items"]]
        assert agents == ["device-2", "device-1", "device-0"]
        assert second.json()["next_cursor"] is None

    async def test_bad_limit_and_cursor_are_422(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        pair = await _login(client, (await register())["email"])
        for query in ("limit=0", "limit=101", "cursor=not-a-cursor"):
            response = await client.get(f"/auth/sessions?{query}", headers=_bearer(pair))
            assert response.status_code == 422, query

    async def test_signing_out_another_device(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        user = await register()
        lost = await _login(client, user["email"], "lost-phone")
        here = await _login(client, user["email"], "laptop")
        items = (await client.get("/auth/sessions", headers=_bearer(here))).json()["items"]
        lost_id = next(i["id"] for i in items if i["user_agent"] == "lost-phone")

        response = await client.delete(f"/auth/sessions/{lost_id}", headers=_bearer(here))
        again = await client.delete(f"/auth/sessions/{lost_id}", headers=_bearer(here))
        refresh = await client.post("/auth/refresh", json={"refresh_token": lost["refresh_token"]})

        assert response.status_code == 204
        assert again.status_code == 404
        assert refresh.status_code == 401

    async def test_another_users_session_is_404(
        self, client: httpx.AsyncClient, register: Registrar
    ) -> None:
        alice = await _login(client, (await register())["email"])
        bob = await _login(client, (await register())["email"])
        alice_session = (await client.get("/auth/sessions", headers=_bearer(alice))).json()[
            "items"
        ][0]["id"]
        response = await client.delete(f"/auth/sessions/{alice_session}", headers=_bearer(bob))
        assert response.status_code == 404


class TestEndedSessionRetention:
    async def test_sessions_ended_long_ago_are_deleted_and_live_ones_kept(
        self, settings: Settings
    ) -> None:
        app = create_app(settings)
        async with serve_app(app) as client:
            email = f"retention-{uuid.uuid4().hex[:12]}@example.com"
            registered = await client.post(
                "/auth/register", json={"email": email, "password": GOOD_PASSWORD, "name": "R"}
            )
            assert registered.status_code == 201, registered.text
            ended, live = await _login(client, email), await _login(client, email)
            logout = await client.post(
                "/auth/logout",
                json={"refresh_token": ended["refresh_token"]},
                headers=_bearer(ended),
            )
            assert logout.status_code == 204
            runtime = app.state.runtime
            async with runtime.engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE refresh_families SET revoked_at = now() - interval '2 days' "
                        "WHERE revoked_at IS NOT NULL AND user_id = :user_id"
                    ),
                    {"user_id": uuid.UUID(registered.json()["id"])},
                )

            deleted = await runtime.retention_loop.run_once()

            async with runtime.engine.connect() as conn:
                families = await conn.scalar(
                    text("SELECT count(*) FROM refresh_families WHERE user_id = :user_id"),
                    {"user_id": uuid.UUID(registered.json()["id"])},
                )
            refused = await client.post(
                "/auth/refresh", json={"refresh_token": ended["refresh_token"]}
            )
            renewed = await client.post(
                "/auth/refresh", json={"refresh_token": live["refresh_token"]}
            )
        assert deleted["refresh_families"] >= 1
        assert families == 1
        assert refused.status_code == 401
        assert renewed.status_code == 200, renewed.text
