"""Event handlers of the orders service: plain functions that receive their dependencies."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from orders_service import service
from orders_service.errors import OrderNotYetKnown
from servicekit.bus import Handler, ReceivedEvent, RetryLater
from servicekit.events import PaymentFailed, PaymentRefunded, PaymentSucceeded, UserDeleted
from servicekit.logging import get_logger
from servicekit.outbox import Outbox
from servicekit.runtime import ConsumerSpec

log = get_logger(__name__)

MAX_DEFERRAL_SECONDS = 60.0


@dataclass(frozen=True)
class HandlerDeps:
    """What the handlers need: the outbox, and how long a payment may wait for its order."""

    outbox: Outbox
    order_wait: timedelta


def wait_for_order(event: ReceivedEvent, error: OrderNotYetKnown, order_wait: timedelta) -> None:
    """Defer an event whose order is not stored yet, with growing delays, until ``order_wait``.

    After that the event fails like any other (retries, then the dead-letter queue), so an
    operator sees it instead of it circling forever.
    """
    age = datetime.now(UTC) - event.envelope.occurred_at
    if age < order_wait:
        delay = min(0.5 * 2**event.deferrals, MAX_DEFERRAL_SECONDS)
        log.info("order.event_waits_for_order", deferrals=event.deferrals, delay=delay)
        raise RetryLater(delay, reason=str(error)) from error
    raise error


async def handle_payment_succeeded(
    event: ReceivedEvent, session: AsyncSession, *, deps: HandlerDeps
) -> None:
    """``payment.succeeded`` → confirm the order (or refund a payment it can no longer take)."""
    try:
        await service.apply_payment_succeeded(
            session=session, outbox=deps.outbox, payment=event.payload(PaymentSucceeded)
        )
    except OrderNotYetKnown as exc:
        wait_for_order(event, exc, deps.order_wait)


async def handle_payment_failed(
    event: ReceivedEvent, session: AsyncSession, *, deps: HandlerDeps
) -> None:
    """``payment.failed`` → fail the pending order."""
    try:
        await service.apply_payment_failed(
            session=session, outbox=deps.outbox, payment=event.payload(PaymentFailed)
        )
    except OrderNotYetKnown as exc:
        wait_for_order(event, exc, deps.order_wait)


async def handle_payment_refunded(
    event: ReceivedEvent, session: AsyncSession, *, deps: HandlerDeps
) -> None:
    """``payment.refunded`` → the refund the order asked for is done."""
    try:
        await service.apply_payment_refunded(session=session, refund=event.payload(PaymentRefunded))
    except OrderNotYetKnown as exc:
        wait_for_order(event, exc, deps.order_wait)


async def handle_user_deleted(
    event: ReceivedEvent, session: AsyncSession, *, deps: HandlerDeps
) -> None:
    """``user.deleted`` → cancel that user's pending orders."""
    data = event.payload(UserDeleted)
    await service.cancel_orders_of_deleted_user(
        session=session, outbox=deps.outbox, user_id=data.user_id
    )


def consumer_specs(deps: HandlerDeps) -> list[ConsumerSpec]:
    """The service's queues: payment results and the user lifecycle."""

    def bind(handler: Callable[..., Awaitable[None]]) -> Handler:
        return functools.partial(handler, deps=deps)

    return [
        ConsumerSpec(
            purpose="payment-results",
            handlers={
                PaymentSucceeded.event_type: bind(handle_payment_succeeded),
                PaymentFailed.event_type: bind(handle_payment_failed),
                PaymentRefunded.event_type: bind(handle_payment_refunded),
            },
        ),
        ConsumerSpec(
            purpose="user-lifecycle",
            handlers={UserDeleted.event_type: bind(handle_user_deleted)},
        ),
    ]
