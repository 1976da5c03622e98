"""The notifications service's ASGI app (a factory for uvicorn: `create_app`)."""

from __future__ import annotations

from fastapi import FastAPI

from notifications_service.config import Settings
from notifications_service.dispatcher import Dispatcher
from notifications_service.handlers import order_handlers, user_handlers
from notifications_service.mailer import SmtpMailer
from notifications_service.models import inbox, outbox
from notifications_service.rendering import EmailRenderer
from notifications_service.router import router
from servicekit.runtime import ConsumerSpec, ServiceRuntime, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    renderer = EmailRenderer()
    mailer = SmtpMailer(settings)
    dispatcher = Dispatcher(settings=settings, mailer=mailer)
    runtime = ServiceRuntime(
        settings,
        outbox_table=outbox,
        inbox_table=inbox,
        publishes=[],  # it only consumes
        consumers=[
            ConsumerSpec("users", user_handlers(settings=settings, renderer=renderer)),
            ConsumerSpec("orders", order_handlers(settings=settings, renderer=renderer)),
        ],
        on_start=[dispatcher.start],
        on_stop=[mailer.close, dispatcher.stop],  # run last to first: the mailer closes last
    )
    app = create_service_app(
        runtime=runtime,
        title="notifications",
        description="Email notifications from the users' and orders' events.",
        prefix="/notifications",
        routers=[router],
    )
    app.state.dispatcher = dispatcher
    return app
