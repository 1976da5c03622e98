"""The payments-gateway service's ASGI app (a factory for uvicorn: `create_app`)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from payments_gateway.config import Settings
from payments_gateway.handlers import build_handlers
from payments_gateway.models import ProviderWebhookEvent, inbox, outbox
from payments_gateway.resources import PaymentsResources
from payments_gateway.router import router
from servicekit.retention import RetentionPolicy
from servicekit.runtime import ConsumerSpec, ServiceRuntime, create_service_app


def retention(settings: Settings) -> list[RetentionPolicy]:
    """This service's own growing tables (the runtime adds the inbox, outbox and denylist)."""
    keep_webhook_ids = timedelta(days=settings.webhook_retention_days)
    return [RetentionPolicy(ProviderWebhookEvent.__table__, "received_at", keep_webhook_ids)]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    resources = PaymentsResources(settings)
    runtime = ServiceRuntime(
        settings,
        outbox_table=outbox,
        inbox_table=inbox,
        consumers=[
            ConsumerSpec(
                purpose="payments",
                handlers=build_handlers(resources),
                concurrency=settings.payment_concurrency,
            )
        ],
        publishes=["payment.succeeded", "payment.failed", "payment.refunded"],
        on_start=[resources.start],
        on_stop=[resources.stop],
        retention=retention(settings),
    )
    app = create_service_app(
        runtime=runtime,
        title="payments-gateway",
        description="Payments and refunds through the external payment provider.",
        prefix="/payments",
        routers=[router],
    )
    app.state.payments = resources
    return app
