"""The error envelope: every failure a client can cause answers in one shape."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from servicekit.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
    code_for_status,
    install_error_handlers,
)
from servicekit.logging import configure_logging, reset_logging
from servicekit.middleware import RequestIdMiddleware


class OrderNotFound(NotFound):
    code = "order_not_found"
    message = "Order not found."


class Item(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1, le=1000)
    unit_price: Decimal = Field(gt=Decimal("0"))


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, str]:
        raise OrderNotFound()

    @app.post("/items")
    async def create_item(item: Item) -> dict[str, str]:
        return {"sku": item.sku}

    @app.get("/search")
    async def search(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, int]:
        return {"limit": limit}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("database password is hunter2")

    @app.get("/throttled")
    async def throttled() -> None:
        raise TooManyRequests(retry_after=2.2)

    @app.get("/login")
    async def login() -> None:
        raise Unauthorized(error="invalid_token", description='it "expired"')

    @app.get("/gone")
    async def gone() -> None:
        raise HTTPException(status_code=410)

    @app.get("/conflict")
    async def conflict() -> None:
        raise Conflict("Order is already cancelled.", details=[{"status": "cancelled"}])

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(service="orders", json=True, stream=stream)
    yield stream
    reset_logging()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


class TestAppErrors:
    async def test_service_error_renders_its_status_code_and_message(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/orders/123", headers={"X-Request-ID": "req-1"})

        assert response.status_code == 404
        assert error_of(response) == {
            "code": "order_not_found",
            "message": "Order not found.",
            "request_id": "req-1",
        }

    async def test_details_are_included_when_given(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/conflict")

        assert response.status_code == 409
        error = error_of(response)
        assert error["code"] == "conflict"
        assert error["message"] == "Order is already cancelled."
        assert error["details"] == [{"status": "cancelled"}]

    async def test_too_many_requests_says_when_to_retry(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/throttled")

        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        assert error_of(response)["code"] == "too_many_requests"

    async def test_unauthorized_carries_a_bearer_challenge(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/login")

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            'Bearer error="invalid_token", error_description="it \'expired\'"'
        )

    def test_plain_unauthorized_challenges_with_bearer(self) -> None:
        assert Unauthorized().headers["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize(
        ("error", "status", "code"),
        [
            (BadRequest(), 400, "bad_request"),
            (Unauthorized(), 401, "unauthorized"),
            (Forbidden(), 403, "forbidden"),
            (NotFound(), 404, "not_found"),
            (Conflict(), 409, "conflict"),
            (UnsupportedMediaType(), 415, "unsupported_media_type"),
            (UnprocessableEntity(), 422, "validation_error"),
            (TooManyRequests(), 429, "too_many_requests"),
            (ServiceUnavailable(), 503, "service_unavailable"),
            (AppError(), 500, "internal_error"),
        ],
    )
    def test_each_error_class_has_its_status_and_code(
        self, error: AppError, status: int, code: str
    ) -> None:
        assert (error.status_code, error.code) == (status, code)
        assert error.message

    def test_code_and_message_can_be_overridden_per_instance(self) -> None:
        error = Unauthorized("Token expired.", code="token_expired")

        assert (error.code, error.message) == ("token_expired", "Token expired.")
        assert Unauthorized.code == "unauthorized"


class TestValidationErrors:
    async def test_invalid_body_is_422_with_details(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/items", json={"sku": "", "quantity": 0, "unit_price": "-1.00"}
        )

        assert response.status_code == 422
        error = error_of(response)
        assert error["code"] == "validation_error"
        fields = {tuple(detail["loc"]) for detail in error["details"]}
        assert fields == {("body", "sku"), ("body", "quantity"), ("body", "unit_price")}
        assert all(set(detail) == {"loc", "msg", "type"} for detail in error["details"])

    async def test_invalid_query_parameter_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/search", params={"limit": "500"})

        assert response.status_code == 422
        assert error_of(response)["details"][0]["loc"] == ["query", "limit"]

    async def test_body_that_is_not_json_is_400_malformed_body(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/items", content=b'{"sku": "a",', headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 400
        assert error_of(response)["code"] == "malformed_body"

    async def test_input_values_are_not_echoed_back(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/items", json={"sku": "secret-sku", "quantity": "many", "unit_price": "1"}
        )

        assert response.status_code == 422
        assert "many" not in response.text


class TestHttpErrors:
    async def test_unknown_route_is_404_not_found(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/nowhere")

        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"

    async def test_wrong_method_is_405_with_allow_header(self, client: httpx.AsyncClient) -> None:
        response = await client.delete("/search")

        assert response.status_code == 405
        assert error_of(response)["code"] == "method_not_allowed"
        assert response.headers["allow"] == "GET"

    async def test_other_statuses_get_a_snake_case_code(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/gone")

        assert response.status_code == 410
        assert error_of(response) == {
            "code": "gone",
            "message": "Gone",
            "request_id": response.headers["x-request-id"],
        }

    @pytest.mark.parametrize(
        ("status", "code"),
        [(404, "not_found"), (405, "method_not_allowed"), (418, "im_a_teapot"), (599, "error")],
    )
    def test_status_codes_map_to_snake_case(self, status: int, code: str) -> None:
        assert code_for_status(status) == code


class TestUnhandledErrors:
    async def test_a_bug_is_a_generic_500_with_the_request_id(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/boom", headers={"X-Request-ID": "req-500"})

        assert response.status_code == 500
        assert response.headers["x-request-id"] == "req-500"
        assert error_of(response) == {
            "code": "internal_error",
            "message": "An unexpected error occurred.",
            "request_id": "req-500",
        }
        assert "hunter2" not in response.text

    async def test_a_bug_is_logged_with_its_traceback_and_request_id(
        self, client: httpx.AsyncClient, log_stream: io.StringIO
    ) -> None:
        await client.get("/boom", headers={"X-Request-ID": "req-tb"})

        lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
        [entry] = [line for line in lines if line["event"] == "http.unhandled_error"]
        assert entry["level"] == "error"
        assert entry["request_id"] == "req-tb"
        assert entry["exception"][0]["exc_type"] == "RuntimeError"
        assert entry["path"] == "/boom"
