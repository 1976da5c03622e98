"""The notifications service's ASGI app (a factory for uvicorn: `create_app`)."""

from __future__ import annotations

from fastapi import FastAPI

from notifications_service.config import Settings
from notifications_service.models import inbox, outbox
from notifications_service.router import router
from servicekit.runtime import ServiceRuntime, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, outbox_table=outbox, inbox_table=inbox)
    return create_service_app(
        runtime=runtime,
        title="notifications",
        description="Email notifications from the users' and orders' events.",
        prefix="/notifications",
        routers=[router],
    )
