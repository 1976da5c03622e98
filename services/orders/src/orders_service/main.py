"""The orders service's ASGI app (``uvicorn --factory orders_service.main:create_app``)."""

from __future__ import annotations

from fastapi import FastAPI

from orders_service.config import Settings
from orders_service.models import inbox, outbox
from orders_service.router import router
from servicekit.runtime import ServiceRuntime, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, outbox_table=outbox, inbox_table=inbox)
    return create_service_app(
        runtime=runtime,
        title="orders",
        description="Orders, their items and the order state machine.",
        prefix="/orders",
        routers=[router],
    )
