"""The auth service's ASGI app (``uvicorn --factory auth_service.main:create_app``)."""

from __future__ import annotations

from fastapi import FastAPI

from auth_service.config import Settings
from auth_service.models import inbox, outbox
from auth_service.router import router
from servicekit.runtime import ServiceRuntime, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, outbox_table=outbox, inbox_table=inbox)
    return create_service_app(
        runtime=runtime,
        title="auth",
        description="Registration, login, tokens, signing keys.",
        prefix="/auth",
        routers=[router],
    )
