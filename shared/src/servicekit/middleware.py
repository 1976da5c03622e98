"""Pure ASGI middleware: request/correlation ids, and JSON-only request bodies."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.errors import REQUEST_ID_HEADER, UnsupportedMediaType, error_response

CORRELATION_ID_HEADER = "X-Correlation-ID"

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_JSON_SUFFIX = re.compile(r"application/[a-z0-9!#$&^_.+-]+\+json")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")


def sane_id(value: str | None) -> str | None:
    """Return ``value`` if it is a safe id (1-128 chars of [A-Za-z0-9._:-]), else None.

    A JWT is made of those characters too; it is refused, since the ids are on every log line.
    """
    if value is not None and _SANE_ID.fullmatch(value) and not value.startswith("eyJ"):
        return value
    return None


ResponseObserver = Callable[[Scope, int, float], None]
"""Told of every answered request: its scope, the response status and the seconds it took."""


class RequestIdMiddleware:
    """Give every request an id, bind it (and the correlation id) to the logs, echo it back.

    With ``on_response`` it also reports each request once answered (access log, metrics), from
    inside the bound context, without another middleware layer and send wrapper per request.
    Paths under ``unobserved`` (health checks, scrapes) are not reported.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        on_response: ResponseObserver | None = None,
        unobserved: Sequence[str] = ("/health", "/metrics"),
    ) -> None:
        self.app = app
        self.on_response = on_response
        self.unobserved = tuple(unobserved)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        # 32 hex digits like uuid4().hex, without building a UUID object per request.
        request_id = sane_id(headers.get(REQUEST_ID_HEADER)) or secrets.token_hex(16)
        correlation_id = sane_id(headers.get(CORRELATION_ID_HEADER)) or request_id
        # The 500 handler runs outside this middleware, after the context is reset:
        # it finds the ids here.
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["correlation_id"] = correlation_id
        echoed = (_REQUEST_ID_NAME, request_id.encode("latin-1"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    h for h in message.get("headers", ()) if h[0].lower() != _REQUEST_ID_NAME
                ]
                headers.append(echoed)
                message["headers"] = headers
            await send(message)

        observe = self.on_response
        if observe is not None and scope["path"].startswith(self.unobserved):
            observe = None
        previous = structlog.contextvars.get_contextvars()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, correlation_id=correlation_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if observe is not None:
                observe(scope, status, time.perf_counter() - started)
            structlog.contextvars.clear_contextvars()
            if previous:
                structlog.contextvars.bind_contextvars(**previous)


def is_json_media_type(content_type: str | None) -> bool:
    """Tell whether a Content-Type is application/json or application/*+json."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or bool(_JSON_SUFFIX.fullmatch(media_type))


class JsonContentTypeMiddleware:
    """Answer 415 to a POST/PUT/PATCH body that is not JSON, except under ``exempt_paths``."""

    def __init__(self, app: ASGIApp, exempt_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.exempt_paths = tuple(exempt_paths)

    def _is_exempt(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        candidates = [path]
        if root_path and path.startswith(root_path):
            candidates.append(path[len(root_path) :] or "/")
        return any(
            candidate.startswith(prefix) for candidate in candidates for prefix in self.exempt_paths
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        if (
            _has_body(headers)
            and not is_json_media_type(headers.get("content-type"))
            and not self._is_exempt(scope)
        ):
            error = UnsupportedMediaType()
            response = error_response(error.status_code, error.code, error.message)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _has_body(headers: Headers) -> bool:
    if "transfer-encoding" in headers:
        return True
    try:
        return int(headers.get("content-length", "0")) > 0
    except ValueError:
        return True


def install_middleware(
    app: FastAPI,
    *,
    json_exempt_paths: Iterable[str] = (),
    on_response: ResponseObserver | None = None,
) -> None:
    """Add both middlewares in the right order (request ids outermost)."""
    app.add_middleware(JsonContentTypeMiddleware, exempt_paths=tuple(json_exempt_paths))
    app.add_middleware(RequestIdMiddleware, on_response=on_response)
