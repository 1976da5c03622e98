"""Request ids follow each request into the logs and back out; bodies must be JSON."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Form
from pydantic import BaseModel

from servicekit.errors import install_error_handlers
from servicekit.logging import (
    bind_context,
    clear_context,
    current_correlation_id,
    current_request_id,
)
from servicekit.middleware import (
    JsonContentTypeMiddleware,
    RequestIdMiddleware,
    install_middleware,
    is_json_media_type,
    sane_id,
)

UUID_HEX = re.compile(r"[0-9a-f]{32}")


class Note(BaseModel):
    text: str


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_middleware(app, json_exempt_paths=["/auth/token"])

    @app.get("/ids")
    async def ids() -> dict[str, str | None]:
        return {"request_id": current_request_id(), "correlation_id": current_correlation_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    @app.post("/notes")
    async def create_note(note: Note) -> dict[str, str]:
        return {"text": note.text}

    @app.post("/notes/empty")
    async def touch() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/auth/token")
    async def token(username: str = Form(), password: str = Form()) -> dict[str, str]:
        return {"username": username}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


class TestRequestId:
    async def test_a_request_without_id_gets_a_fresh_one(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/ids")

        request_id = response.headers["x-request-id"]
        assert UUID_HEX.fullmatch(request_id)
        assert response.json() == {"request_id": request_id, "correlation_id": request_id}

    async def test_a_sane_incoming_id_is_kept(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            "/ids", headers={"X-Request-ID": "gw-1:abc.def_9", "X-Correlation-ID": "corr-7"}
        )

        assert response.headers["x-request-id"] == "gw-1:abc.def_9"
        assert response.json() == {"request_id": "gw-1:abc.def_9", "correlation_id": "corr-7"}

    @pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "<script>", "id\u00e9"])
    async def test_an_insane_incoming_id_is_replaced(
        self, client: httpx.AsyncClient, bad: str
    ) -> None:
        response = await client.get(
            "/ids", headers={b"X-Request-ID": bad.encode(), b"X-Correlation-ID": bad.encode()}
        )

        request_id = response.headers["x-request-id"]
        assert UUID_HEX.fullmatch(request_id)
        assert response.json()["correlation_id"] == request_id

    async def test_the_id_is_on_error_responses_too(self, client: httpx.AsyncClient) -> None:
        not_found = await client.get("/nowhere", headers={"X-Request-ID": "r-404"})
        crashed = await client.get("/boom", headers={"X-Request-ID": "r-500"})

        assert not_found.headers["x-request-id"] == "r-404"
        assert not_found.json()["error"]["request_id"] == "r-404"
        assert crashed.status_code == 500
        assert crashed.headers["x-request-id"] == "r-500"
        assert crashed.json()["error"]["request_id"] == "r-500"

    async def test_the_response_carries_exactly_one_request_id_header(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/nowhere", headers={"X-Request-ID": "r-1"})

        assert response.headers.get_list("x-request-id") == ["r-1"]

    async def test_the_context_is_restored_after_the_request(
        self, client: httpx.AsyncClient
    ) -> None:
        bind_context(request_id="outer")
        try:
            await client.get("/ids")
            assert current_request_id() == "outer"
        finally:
            clear_context()

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("abc-1", "abc-1"), ("a:b.c_d", "a:b.c_d"), (None, None), ("a/b", None), ("", None)],
    )
    def test_sane_id(self, value: str | None, expected: str | None) -> None:
        assert sane_id(value) == expected


class TestJsonContentType:
    async def test_json_body_passes(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/notes", json={"text": "hi"})

        assert response.status_code == 200

    async def test_json_with_charset_passes(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/notes",
            content=b'{"text": "hi"}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )

        assert response.status_code == 200

    @pytest.mark.parametrize(
        "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
    )
    async def test_other_body_types_are_415(
        self, client: httpx.AsyncClient, content_type: str
    ) -> None:
        response = await client.post(
            "/notes",
            content=b'{"text": "hi"}',
            headers={"Content-Type": content_type, "X-Request-ID": "r-415"},
        )

        assert response.status_code == 415
        assert response.json() == {
            "error": {
                "code": "unsupported_media_type",
                "message": "Content-Type must be application/json.",
                "request_id": "r-415",
            }
        }
        assert response.headers["x-request-id"] == "r-415"

    async def test_a_body_without_content_type_is_415(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/notes", content=b'{"text": "hi"}')

        assert response.status_code == 415

    async def test_a_chunked_body_is_checked_too(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"text": "hi"}'

        response = await client.post(
            "/notes", content=chunks(), headers={"Content-Type": "text/plain"}
        )

        assert response.status_code == 415

    async def test_a_post_without_body_passes(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/notes/empty")

        assert response.status_code == 200

    async def test_exempt_paths_take_form_data(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/auth/token", data={"username": "a@example.com", "password": "pw"}
        )

        assert response.status_code == 200
        assert response.json() == {"username": "a@example.com"}

    async def test_get_requests_are_not_checked(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/ids", headers={"Content-Type": "text/plain"})

        assert response.status_code == 200

    @pytest.mark.parametrize(
        ("content_type", "expected"),
        [
            ("application/json", True),
            ("Application/JSON; charset=UTF-8", True),
            ("application/merge-patch+json", True),
            ("application/problem+json; charset=utf-8", True),
            ("application/xml", False),
            ("text/json+", False),
            (None, False),
        ],
    )
    def test_is_json_media_type(self, content_type: str | None, expected: bool) -> None:
        assert is_json_media_type(content_type) is expected

    async def test_adding_the_middlewares_by_hand_works_the_same(self) -> None:
        app = FastAPI()
        app.add_middleware(JsonContentTypeMiddleware)
        app.add_middleware(RequestIdMiddleware)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.put("/x", content=b"a=b", headers={"Content-Type": "text/csv"})

        assert response.status_code == 415
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
