"""The one error envelope of every service, the exceptions that carry it, and their handlers."""

# ruff: noqa: N818  # HTTP errors are named after their status (NotFound, Conflict...).

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from uuid import uuid4

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from servicekit.logging import current_request_id, get_logger

log = get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# Where the 500 handler leaves the exception it logged, for LogUnhandledOnce.
_LOGGED_EXCEPTION = "servicekit.logged_exception"


class AppError(Exception):
    """An expected failure that maps to one HTTP status and one error code."""

    status_code: int = 500
    code: str = "internal_error"
    message: str = "An unexpected error occurred."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message if message is not None else type(self).message
        self.code = code if code is not None else type(self).code
        self.details = details
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)


class BadRequest(AppError):
    """400: the request cannot be understood."""

    status_code = 400
    code = "bad_request"
    message = "The request is malformed."


def _quoted(value: str) -> str:
    return value.replace("\\", "").replace('"', "'")


class Unauthorized(AppError):
    """401: no usable credentials; always carries a Bearer challenge."""

    status_code = 401
    code = "unauthorized"
    message = "Authentication is required."
    bearer_error: str | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        error: str | None = None,
        description: str | None = None,
        details: list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details, headers=headers)
        challenge = "Bearer"
        params = []
        bearer_error = error if error is not None else self.bearer_error
        if bearer_error:
            params.append(f'error="{_quoted(bearer_error)}"')
            if description:
                params.append(f'error_description="{_quoted(description)}"')
        if params:
            challenge += " " + ", ".join(params)
        self.headers.setdefault("WWW-Authenticate", challenge)


class Forbidden(AppError):
    """403: authenticated but not allowed."""

    status_code = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class NotFound(AppError):
    """404: unknown, or not the caller's."""

    status_code = 404
    code = "not_found"
    message = "The resource was not found."


class Conflict(AppError):
    """409: the request conflicts with the current state."""

    status_code = 409
    code = "conflict"
    message = "The request conflicts with the current state of the resource."


class UnsupportedMediaType(AppError):
    """415: the body is not in a content type the endpoint accepts."""

    status_code = 415
    code = "unsupported_media_type"
    message = "Content-Type must be application/json."


class UnprocessableEntity(AppError):
    """422: well-formed but invalid input."""

    status_code = 422
    code = "validation_error"
    message = "The request is invalid."


class TooManyRequests(AppError):
    """429: throttled; tells the client when to come back."""

    status_code = 429
    code = "too_many_requests"
    message = "Too many requests; try again later."

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        details: list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details, headers=headers)
        self.retry_after = None if retry_after is None else max(1, math.ceil(retry_after))
        if self.retry_after is not None:
            self.headers.setdefault("Retry-After", str(self.retry_after))


class ServiceUnavailable(AppError):
    """503: a hard dependency is down."""

    status_code = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable."


class DatabaseUnavailable(ServiceUnavailable):
    """503: the service's database does not answer; the request had no effect."""

    code = "database_unavailable"
    message = "The service's database is unavailable; try again shortly."


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}

_STATUS_MESSAGES = {
    404: "The resource was not found.",
    405: "The method is not allowed for this resource.",
}


class ErrorDetail(BaseModel):
    """The body of every error: a stable code, a message for people, the request id."""

    code: str = Field(description="snake_case error code, stable across versions.")
    message: str
    request_id: str = Field(description="The X-Request-ID of the request, for support.")
    details: list[Any] | None = Field(
        default=None, description="Validation problems, each with `loc`, `msg` and `type`."
    )


class ErrorEnvelope(BaseModel):
    """``{"error": {...}}``: how every service answers a failed request."""

    error: ErrorDetail


_RESPONSE_DESCRIPTIONS = {
    400: "Malformed request (the body is not valid JSON, or a parameter is not allowed).",
    401: "Missing, invalid, expired or revoked access token.",
    403: "Authenticated, but not allowed to do this.",
    404: "Unknown, or not the caller's.",
    409: "Conflicts with the current state of the resource.",
    413: "The body is too large.",
    415: "The body is not application/json.",
    422: "Invalid input.",
    429: "Too many requests; retry after the time in Retry-After.",
    503: "A dependency the service needs is down; the request had no effect.",
}

_RESPONSE_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The Bearer challenge (RFC 6750).",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "string"},
        }
    },
}


def error_responses(
    *codes: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses=`` of a route for the error statuses it may answer with."""
    described = {**_RESPONSE_DESCRIPTIONS, **(descriptions or {})}
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        response: dict[str, Any] = {
            "model": ErrorEnvelope,
            "description": described.get(code, _phrase(code) or "Error"),
        }
        if code in _RESPONSE_HEADERS:
            response["headers"] = _RESPONSE_HEADERS[code]
        responses[code] = response
    return responses


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""


def code_for_status(status_code: int) -> str:
    """Return the snake_case error code for an HTTP status."""
    if status_code in _STATUS_CODES:
        return _STATUS_CODES[status_code]
    phrase = _phrase(status_code).lower().replace("'", "")
    return re.sub(r"[^a-z0-9]+", "_", phrase).strip("_") or "error"


def error_body(
    code: str, message: str, *, request_id: str, details: list[Any] | None = None
) -> dict[str, Any]:
    """Build the error envelope ``{"error": {code, message, request_id[, details]}}``."""
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _request_id(request: Request | None) -> str:
    request_id = current_request_id()
    if request_id is None and request is not None:
        # Outside the request-id middleware (the 500 handler runs there) the context is gone,
        # but the middleware left the id on the request.
        state_id = request.scope.get("state", {}).get("request_id")
        request_id = state_id if isinstance(state_id, str) else None
    return request_id or uuid4().hex


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    details: list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
    request: Request | None = None,
) -> JSONResponse:
    """Render the error envelope, with the current request id in body and headers."""
    request_id = _request_id(request)
    response_headers = {**(headers or {}), REQUEST_ID_HEADER: request_id}
    return JSONResponse(
        error_body(code, message, request_id=request_id, details=details),
        status_code=status_code,
        headers=response_headers,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Reduce pydantic errors to JSON-safe ``{loc, msg, type}`` items (never the input)."""
    return [
        {
            "loc": [_jsonable(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(
        exc.status_code,
        exc.code,
        exc.message,
        details=exc.details,
        headers=exc.headers,
        request=request,
    )


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(
            400, "malformed_body", "The request body is not valid JSON.", request=request
        )
    return error_response(
        422,
        "validation_error",
        "The request is invalid.",
        details=validation_details(errors),
        request=request,
    )


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app fully matches at the request's path."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    default_phrase = _phrase(exc.status_code)
    if isinstance(exc.detail, str) and exc.detail and exc.detail != default_phrase:
        message = exc.detail
    else:
        message = _STATUS_MESSAGES.get(exc.status_code, default_phrase or "Request failed.")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # The router names only the methods of the first route matching the path; RFC 9110
        # wants every method the resource supports.
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return error_response(
        exc.status_code,
        code_for_status(exc.status_code),
        message,
        headers=headers,
        request=request,
    )


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    request.scope[_LOGGED_EXCEPTION] = exc
    request_id = _request_id(request)
    state = request.scope.get("state", {})
    correlation_id = state.get("correlation_id", request_id)
    with structlog.contextvars.bound_contextvars(
        request_id=request_id, correlation_id=correlation_id
    ):
        log.error(
            "http.unhandled_error",
            method=request.method,
            path=request.url.path,
            exc_info=exc,
        )
        return error_response(500, "internal_error", AppError.message, request=request)


class LogUnhandledOnce:
    """Outermost ASGI layer: end an exception the 500 handler has already answered and logged.

    Starlette's ServerErrorMiddleware re-raises it after its handler ran so that the server can
    log it, and uvicorn does ("Exception in ASGI application"): a second record of the same
    error, with a traceback of its own. Any other exception goes on to the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if scope.get(_LOGGED_EXCEPTION) is not exc:
                raise


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app produces answer with the envelope."""
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
