"""The profile API: reading, access control, listing, updating and deleting."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from servicekit.events import UserDeleted, UserUpdated
from servicekit.testing.plugin import serve_app
from servicekit.testing.tokens import TokenMinter
from servicekit.testing.waiting import wait_until
from users_service.config import Settings

from .support import create_profile


@pytest.fixture
def app(settings: Settings, app_factory: Callable[[Settings], FastAPI]) -> FastAPI:
    return app_factory(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(app) as client:
        yield client


class TestReadOwnProfile:
    async def test_returns_the_callers_profile(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        user_id = await create_profile(app, name="Grace Hopper", roles=["admin"])

        response = await client.get("/users/me", headers=token_minter.headers(user_id))

        assert response.status_code == 200
        body = response.json()
        assert body["id"] == str(user_id)
        assert body["name"] == "Grace Hopper"
        assert body["roles"] == ["admin"]
        assert body["bio"] is None
        assert body["created_at"].endswith("Z")
        assert set(body) == {"id", "email", "name", "bio", "roles", "created_at", "updated_at"}

    async def test_without_a_token_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/users/me")

        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_a_forged_token_is_401(
        self, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        token = token_minter.mint(uuid.uuid4(), aud="someone-else")

        response = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})

        assert response.status_code == 401

    async def test_refusals_match_a_route_with_the_principal_dependency(
        self, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        # Both verify the caller through PrincipalDep: their 401s cannot be told apart.
        forged = token_minter.mint(uuid.uuid4(), aud="someone-else")
        for headers in ({}, {"Authorization": f"Bearer {forged}"}, {"Authorization": "Basic x"}):
            read = await client.get("/users/me", headers=headers)
            patch = await client.patch("/users/me", headers=headers, json={"name": "X"})

            assert read.status_code == patch.status_code == 401
            assert read.headers["www-authenticate"] == patch.headers["www-authenticate"]
            read_error, patch_error = read.json()["error"], patch.json()["error"]
            assert read_error.pop("request_id") != patch_error.pop("request_id")
            assert read_error == patch_error

    async def test_the_document_says_it_needs_the_bearer_token(
        self, client: httpx.AsyncClient
    ) -> None:
        document = (await client.get("/users/openapi.json")).json()
        read, patch = (document["paths"]["/users/me"][m] for m in ("get", "patch"))

        assert read["security"] == patch["security"] == [{"OAuth2PasswordBearer": []}]
        assert "OAuth2PasswordBearer" in document["components"]["securitySchemes"]
        assert "401" in read["responses"]


class TestAccessControl:
    async def test_another_users_profile_is_404_like_an_unknown_one(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        owner = await create_profile(app)
        intruder = await create_profile(app)
        headers = token_minter.headers(intruder)

        theirs = await client.get(f"/users/{owner}", headers=headers)
        unknown = await client.get(f"/users/{uuid.uuid4()}", headers=headers)

        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"]
        assert theirs.json()["error"]["message"] == unknown.json()["error"]["message"]

    async def test_a_user_reads_themself_by_id(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        user_id = await create_profile(app)

        response = await client.get(f"/users/{user_id}", headers=token_minter.headers(user_id))

        assert response.status_code == 200
        assert response.json()["id"] == str(user_id)

    async def test_an_admin_reads_any_user(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        user_id = await create_profile(app, name="Someone")
        admin = token_minter.headers(uuid.uuid4(), roles=["admin"])

        response = await client.get(f"/users/{user_id}", headers=admin)
        unknown = await client.get(f"/users/{uuid.uuid4()}", headers=admin)

        assert response.status_code == 200
        assert response.json()["name"] == "Someone"
        assert unknown.status_code == 404

    async def test_a_non_admin_cannot_list_users(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        user_id = await create_profile(app)

        response = await client.get("/users", headers=token_minter.headers(user_id))

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "admin_only"

    async def test_an_id_that_is_not_a_uuid_is_422(
        self, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        response = await client.get("/users/42", headers=token_minter.headers(uuid.uuid4()))

        assert response.status_code == 422


class TestListUsers:
    async def test_an_admin_pages_through_every_user_newest_first(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        # Far in the future, so these are the newest profiles of the run; pairs share a
        # created_at, so the id has to break the tie for the keyset to be exact.
        base = datetime(2099, 1, 1, tzinfo=UTC)
        mine = set()
        for i in range(25):
            at = base + timedelta(seconds=i // 2, microseconds=123)
            mine.add(await create_profile(app, name=f"user {i}", created_at=at))
        admin = token_minter.headers(uuid.uuid4(), roles=["admin"])

        first = await client.get("/users", headers=admin)
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            page = await client.get("/users", headers=admin, params=params)
            assert page.status_code == 200
            assert len(page.json()["items"]) <= 7
            seen.extend(page.json()["items"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break

        assert first.status_code == 200
        assert len(first.json()["items"]) == 20  # the default limit
        assert first.json()["next_cursor"]
        assert [item["id"] for item in first.json()["items"]] == [i["id"] for i in seen[:20]]
        ids = [item["id"] for item in seen]
        assert len(ids) == len(set(ids))  # no row on two pages
        assert {uuid.UUID(i) for i in ids[:25]} == mine  # the newest first, none missed
        keys = [(item["created_at"], uuid.UUID(item["id"])) for item in seen]
        assert keys == sorted(keys, reverse=True)

    @pytest.mark.parametrize("limit", ["0", "101", "-1", "abc"])
    async def test_a_limit_outside_1_to_100_is_422(
        self, client: httpx.AsyncClient, token_minter: TokenMinter, limit: str
    ) -> None:
        admin = token_minter.headers(uuid.uuid4(), roles=["admin"])

        response = await client.get("/users", headers=admin, params={"limit": limit})

        assert response.status_code == 422

    @pytest.mark.parametrize(
        "cursor",
        [
            "not-a-cursor",
            "%%%",
            base64.urlsafe_b64encode(b"[1, 2]").decode(),
            base64.urlsafe_b64encode(b'{"t": "yesterday", "id": "x"}').decode(),
            base64.urlsafe_b64encode(b'{"t": "2026-01-01T00:00:00", "id": "1"}').decode(),
            "A" * 500,
        ],
    )
    async def test_a_malformed_cursor_is_422(
        self, client: httpx.AsyncClient, token_minter: TokenMinter, cursor: str
    ) -> None:
        admin = token_minter.headers(uuid.uuid4(), roles=["admin"])

        response = await client.get("/users", headers=admin, params={"cursor": cursor})

        assert response.status_code == 422
        assert response.json()["error"]["code"] in {"invalid_cursor", "validation_error"}


class TestUpdateProfile:
    async def test_patch_then_get_returns_the_new_values_and_publishes_user_updated(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        token_minter: TokenMinter,
        settings: Settings,
        capture_events: Callable[..., Any],
    ) -> None:
        capture = await capture_events(settings.events_exchange, ["user.*"])
        user_id = await create_profile(app, name="Old Name")
        headers = token_minter.headers(user_id)
        warm = await client.get("/users/me", headers=headers)  # now cached

        patched = await client.patch(
            "/users/me", headers=headers, json={"name": "  New Name ", "bio": "Hello"}
        )
        read = await client.get("/users/me", headers=headers)
        published = await capture.wait_for(
            "user.updated", where=lambda d: isinstance(d, UserUpdated) and d.user_id == user_id
        )

        assert warm.json()["name"] == "Old Name"
        assert patched.status_code == 200
        assert patched.json()["name"] == "New Name"
        assert read.json() == patched.json()
        assert read.json()["bio"] == "Hello"
        assert read.json()["updated_at"] > warm.json()["updated_at"]
        data = published[0][1]
        assert isinstance(data, UserUpdated)
        assert (data.name, data.bio) == ("New Name", "Hello")
        assert data.email == f"{user_id.hex}@example.com"

    async def test_bio_can_be_cleared_and_name_alone_changed(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        headers = token_minter.headers(await create_profile(app))
        await client.patch("/users/me", headers=headers, json={"bio": "x" * 1000})

        cleared = await client.patch("/users/me", headers=headers, json={"bio": None})
        renamed = await client.patch("/users/me", headers=headers, json={"name": "N"})

        assert cleared.status_code == 200
        assert cleared.json()["bio"] is None
        assert renamed.status_code == 200
        assert renamed.json()["name"] == "N"
        assert renamed.json()["bio"] is None

    @pytest.mark.parametrize(
        "body",
        [
            {"id": "00000000-0000-0000-0000-000000000000"},
            {"email": "evil@example.com"},
            {"roles": ["admin"]},
            {"name": "Fine", "roles": ["admin"]},
            {"created_at": "2000-01-01T00:00:00Z"},
        ],
    )
    async def test_mass_assignment_is_422_and_changes_nothing(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        token_minter: TokenMinter,
        body: dict[str, Any],
    ) -> None:
        user_id = await create_profile(app, name="Unchanged")
        headers = token_minter.headers(user_id)
        before = (await client.get("/users/me", headers=headers)).json()

        response = await client.patch("/users/me", headers=headers, json=body)
        after = (await client.get("/users/me", headers=headers)).json()
        fresh = (
            await client.get(f"/users/{user_id}", headers=token_minter.headers(user_id))
        ).json()

        assert response.status_code == 422
        assert after == before == fresh
        assert after["roles"] == []

    @pytest.mark.parametrize(
        "body",
        [
            {"name": ""},
            {"name": "   "},
            {"name": None},
            {"name": "x" * 101},
            {"bio": "x" * 1001},
            {"name": 42},
        ],
    )
    async def test_invalid_values_are_422(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter, body: Any
    ) -> None:
        headers = token_minter.headers(await create_profile(app))

        response = await client.patch("/users/me", headers=headers, json=body)

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"

    async def test_a_body_that_is_not_an_object_is_rejected(
        self, app: FastAPI, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        headers = token_minter.headers(await create_profile(app))

        as_list = await client.patch("/users/me", headers=headers, json=["name"])
        broken = await client.patch(
            "/users/me",
            headers={**headers, "Content-Type": "application/json"},
            content=b'{"name": ',
        )

        assert as_list.status_code == 422
        assert broken.status_code == 400

    async def test_patching_without_a_profile_is_404(
        self, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        response = await client.patch(
            "/users/me", headers=token_minter.headers(uuid.uuid4()), json={"name": "X"}
        )

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "profile_not_found"


class TestDeleteProfile:
    async def test_delete_removes_the_profile_and_publishes_user_deleted(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        token_minter: TokenMinter,
        settings: Settings,
        capture_events: Callable[..., Any],
    ) -> None:
        capture = await capture_events(settings.events_exchange, ["user.*"])
        user_id = await create_profile(app)
        headers = token_minter.headers(user_id)
        admin = token_minter.headers(uuid.uuid4(), roles=["admin"])
        assert (await client.get("/users/me", headers=headers)).status_code == 200  # cached

        deleted = await client.delete("/users/me", headers=headers)
        by_admin = await client.get(f"/users/{user_id}", headers=admin)
        published = await capture.wait_for(
            "user.deleted", where=lambda d: isinstance(d, UserDeleted) and d.user_id == user_id
        )

        assert deleted.status_code == 204
        assert deleted.content == b""
        assert by_admin.status_code == 404
        assert len(published) == 1

        # The service consumes its own user.deleted too: the deleted user's token stops working.
        async def token_refused() -> bool:
            return (await client.get("/users/me", headers=headers)).status_code == 401

        await wait_until(token_refused, timeout=3, what="token refused")
        again = await client.delete("/users/me", headers=token_minter.headers(user_id))
        assert again.status_code in {401, 404}

    async def test_deleting_without_a_profile_is_404(
        self, client: httpx.AsyncClient, token_minter: TokenMinter
    ) -> None:
        response = await client.delete("/users/me", headers=token_minter.headers(uuid.uuid4()))

        assert response.status_code == 404
