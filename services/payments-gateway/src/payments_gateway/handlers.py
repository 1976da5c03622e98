"""Event handlers of the payments-gateway service (see ``service`` for the delivery reasoning)."""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from payments_gateway import service
from payments_gateway.resources import PaymentsResources
from servicekit.bus import Handler, ReceivedEvent
from servicekit.events import OrderCreated, OrderRefundRequested


async def handle_order_created(
    event: ReceivedEvent, session: AsyncSession, *, resources: PaymentsResources
) -> None:
    """Charge the new order (once, however often the event arrives)."""
    await service.charge_order(
        session=session,
        sessions=resources.sessions,
        outbox=resources.outbox,
        provider=resources.provider,
        settings=resources.settings,
        order=event.payload(OrderCreated),
    )


async def handle_order_refund_requested(
    event: ReceivedEvent, session: AsyncSession, *, resources: PaymentsResources
) -> None:
    """Refund the order's payment (once)."""
    await service.refund_order(
        session=session,
        outbox=resources.outbox,
        provider=resources.provider,
        settings=resources.settings,
        request=event.payload(OrderRefundRequested),
        requested_at=event.envelope.occurred_at,
    )


def build_handlers(resources: PaymentsResources) -> dict[str, Handler]:
    """The handlers by event type, bound to the service's resources."""
    return {
        OrderCreated.event_type: partial(handle_order_created, resources=resources),
        OrderRefundRequested.event_type: partial(
            handle_order_refund_requested, resources=resources
        ),
    }
