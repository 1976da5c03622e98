"""The orders service's ASGI app (``uvicorn --factory orders_service.main:create_app``)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from orders_service.config import Settings
from orders_service.handlers import HandlerDeps, consumer_specs
from orders_service.maintenance import IdempotencyJanitor, InFlightSweeper
from orders_service.models import inbox, outbox
from orders_service.router import router
from servicekit.outbox import Outbox
from servicekit.runtime import ServiceRuntime, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in its lifespan."""
    settings = settings or Settings()
    deps = HandlerDeps(
        outbox=Outbox(outbox, producer=settings.service_name),
        order_wait=timedelta(seconds=settings.order_wait_seconds),
    )
    janitor = IdempotencyJanitor(
        ttl=timedelta(hours=settings.idempotency_ttl_hours),
        interval=settings.idempotency_purge_interval_seconds,
    )
    sweeper = InFlightSweeper(
        outbox=deps.outbox,
        interval=settings.in_flight_sweep_seconds,
        pending_after=timedelta(seconds=settings.pending_reannounce_seconds),
        refund_after=timedelta(seconds=settings.refund_rerequest_seconds),
    )
    runtime = ServiceRuntime(
        settings,
        outbox_table=outbox,
        inbox_table=inbox,
        consumers=consumer_specs(deps),
        publishes=[
            "order.created",
            "order.confirmed",
            "order.failed",
            "order.cancelled",
            "order.refund_requested",
        ],
        on_start=[janitor.start, sweeper.start],
        on_stop=[janitor.stop, sweeper.stop],
    )
    return create_service_app(
        runtime=runtime,
        title="orders",
        description="Orders, their items and the order state machine.",
        prefix="/orders",
        routers=[router],
    )
