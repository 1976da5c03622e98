"""The auth service's ASGI app (``uvicorn --factory auth_service.main:create_app``)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from auth_service import handlers
from auth_service.config import Settings
from auth_service.models import RefreshFamily, inbox, outbox
from auth_service.resources import AuthResources
from auth_service.router import router, well_known_router
from servicekit.retention import RetentionPolicy
from servicekit.runtime import ConsumerSpec, ServiceRuntime, create_service_app

# What the outbox may carry (it refuses anything else); also the AsyncAPI document's source.
PUBLISHES = ("user.registered", "session.revoked")


def retention(settings: Settings) -> list[RetentionPolicy]:
    """This service's own growing tables (the runtime adds the inbox, outbox and denylist)."""
    # A session that expired or was revoked is kept for investigations, then deleted (its
    # refresh tokens go with it); presenting one of its tokens after that is still a 401.
    keep = timedelta(seconds=settings.ended_session_retention_seconds)
    families = RefreshFamily.__table__
    return [
        RetentionPolicy(families, "expires_at", keep),
        RetentionPolicy(families, "revoked_at", keep),
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    auth = AuthResources(settings)
    runtime = ServiceRuntime(
        settings,
        outbox_table=outbox,
        inbox_table=inbox,
        publishes=PUBLISHES,
        consumers=[
            ConsumerSpec(purpose="accounts", handlers={"user.deleted": handlers.user_deleted(auth)})
        ],
        on_start=[auth.start],
        on_stop=[auth.stop],
        retention=retention(settings),
    )
    app = create_service_app(
        runtime=runtime,
        title="auth",
        description=(
            "Registration, login, OAuth 2.0 token endpoint, refresh-token rotation, logout and "
            "the public signing keys (JWKS). Access tokens are RS256 JWTs (`typ: at+jwt`) valid "
            "for at most 15 minutes."
        ),
        prefix="/auth",
        routers=[router, well_known_router],
        json_exempt_paths=["/auth/token"],
    )
    app.state.auth = auth
    return app
