"""Event handlers of the payments-gateway service (see ``service`` for the delivery reasoning)."""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from payments_gateway import service
from payments_gateway.context import PaymentsContext
from servicekit.bus import Handler, ReceivedEvent
from servicekit.events import OrderCreated, OrderRefundRequested


async def handle_order_created(
    event: ReceivedEvent, session: AsyncSession, *, context: PaymentsContext
) -> None:
    """Charge the new order (once, however often the event arrives)."""
    await service.charge_order(
        session=session,
        sessions=context.sessions,
        outbox=context.outbox,
        provider=context.provider,
        settings=context.settings,
        order=event.payload(OrderCreated),
    )


async def handle_order_refund_requested(
    event: ReceivedEvent, session: AsyncSession, *, context: PaymentsContext
) -> None:
    """Refund the order's payment (once)."""
    await service.refund_order(
        session=session,
        outbox=context.outbox,
        provider=context.provider,
        settings=context.settings,
        request=event.payload(OrderRefundRequested),
        requested_at=event.envelope.occurred_at,
    )


def build_handlers(context: PaymentsContext) -> dict[str, Handler]:
    """The handlers by event type, bound to the service's context."""
    return {
        OrderCreated.event_type: partial(handle_order_created, context=context),
        OrderRefundRequested.event_type: partial(handle_order_refund_requested, context=context),
    }
