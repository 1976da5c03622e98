"""The auth app, served by uvicorn in a child process, with faults a request can ask for.

``uvicorn --factory tests.integration.faulty_app:create_app`` with the settings as JSON in
``FAULTY_AUTH_SETTINGS``. A request carrying ``X-Fault: <kind>`` makes the login, refresh or
logout service call fail while it holds the caller's secrets (the password, the refresh token,
the bearer token in the request's headers):

- ``error``: a bug, an exception whose message carries no secret;
- ``validation``: pydantic refusing the secret (its message quotes the input);
- ``sql``: PostgreSQL refusing a statement that has the secret among its parameters.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter
from sqlalchemy import text
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from auth_service import main, service
from auth_service.config import Settings

FAULT_HEADER = "X-Fault"
_fault: contextvars.ContextVar[str | None] = contextvars.ContextVar("fault", default=None)


class _FaultFromHeader:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fault = Headers(scope=scope).get(FAULT_HEADER) if scope["type"] == "http" else None
        token = _fault.set(fault)
        try:
            await self.app(scope, receive, send)
        finally:
            _fault.reset(token)


def _failing(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(call)
    async def failing(**kwargs: Any) -> Any:
        secret = kwargs.get("password") or kwargs.get("refresh_token")
        fault = _fault.get()
        if fault == "error":
            raise RuntimeError("the session could not be stored")
        if fault == "validation":
            TypeAdapter(int).validate_python(secret)
        if fault == "sql":
            await kwargs["session"].execute(
                text("SELECT CAST(:value AS integer)"), {"value": secret}
            )
        return await call(**kwargs)

    return failing


def create_app() -> FastAPI:
    """The real auth app; its login, refresh and logout fail on request."""
    for name in ("login", "refresh", "logout"):
        setattr(service, name, _failing(getattr(service, name)))
    settings = Settings.model_validate_json(os.environ["FAULTY_AUTH_SETTINGS"])
    app = main.create_app(settings)
    app.add_middleware(_FaultFromHeader)
    return app
