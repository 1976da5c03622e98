"""The users service's ASGI app (``uvicorn --factory users_service.main:create_app``)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from servicekit.errors import error_response
from servicekit.logging import get_logger
from servicekit.runtime import ConsumerSpec, ServiceRuntime, create_service_app
from users_service.config import Settings
from users_service.errors import DatabaseUnavailable
from users_service.handlers import handle_user_registered
from users_service.models import inbox, outbox
from users_service.resources import UsersResources
from users_service.router import router

log = get_logger(__name__)

# Raised when PostgreSQL cannot be reached (asyncpg's connect raises plain OSErrors).
DATABASE_DOWN = (OSError, OperationalError, InterfaceError, PoolTimeoutError)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database.unavailable", path=request.url.path, error=type(exc).__name__)
    error = DatabaseUnavailable()
    return error_response(error.status_code, error.code, error.message, request=request)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    resources = UsersResources(settings)
    runtime = ServiceRuntime(
        settings,
        outbox_table=outbox,
        inbox_table=inbox,
        consumers=[ConsumerSpec("profiles", {"user.registered": handle_user_registered})],
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
    for exc_type in DATABASE_DOWN:
        app.add_exception_handler(exc_type, _database_unavailable)
    return app
