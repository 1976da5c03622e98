"""The users service's ASGI app (``uvicorn --factory users_service.main:create_app``)."""

from __future__ import annotations

from fastapi import FastAPI

from servicekit.runtime import ConsumerSpec, ServiceRuntime, create_service_app
from users_service.config import Settings
from users_service.handlers import handle_user_registered
from users_service.models import inbox, outbox
from users_service.resources import UsersResources
from users_service.router import router


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    resources = UsersResources(settings)
    runtime = ServiceRuntime(
        settings,
        outbox_table=outbox,
        inbox_table=inbox,
        consumers=[ConsumerSpec("profiles", {"user.registered": handle_user_registered})],
        publishes=["user.updated", "user.deleted"],
        on_start=[resources.open],
        on_stop=[resources.close],
    )
    app = create_service_app(
        runtime=runtime,
        title="users",
        description="User profiles behind a read-through Redis cache.",
        prefix="/users",
        routers=[router],
    )
    app.state.users = resources
    return app
