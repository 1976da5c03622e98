"""Event handlers: each runs in the consumer's transaction, together with its inbox row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from notifications_service import service
from notifications_service.config import Settings
from notifications_service.errors import RecipientUnknown
from notifications_service.rendering import EmailRenderer
from servicekit.bus import Handler, ReceivedEvent, RetryLater
from servicekit.events import UserDeleted, UserRegistered, UserUpdated
from servicekit.logging import get_logger

log = get_logger(__name__)

ORDER_EVENTS = ("order.confirmed", "order.failed", "order.cancelled", "payment.refunded")


def user_handlers(*, settings: Settings, renderer: EmailRenderer) -> dict[str, Handler]:
    """Handlers keeping the user projection (and recording the welcome email)."""
    deliver_within = timedelta(seconds=settings.delivery_deadline_seconds)

    async def on_user_registered(event: ReceivedEvent, session: AsyncSession) -> None:
        await service.apply_user_registered(
            session=session,
            envelope=event.envelope,
            data=event.payload(UserRegistered),
            renderer=renderer,
            deliver_within=deliver_within,
        )

    async def on_user_updated(event: ReceivedEvent, session: AsyncSession) -> None:
        await service.apply_user_updated(session=session, data=event.payload(UserUpdated))

    async def on_user_deleted(event: ReceivedEvent, session: AsyncSession) -> None:
        await service.erase_user(session=session, data=event.payload(UserDeleted))

    return {
        "user.registered": on_user_registered,
        "user.updated": on_user_updated,
        "user.deleted": on_user_deleted,
    }


def order_handlers(*, settings: Settings, renderer: EmailRenderer) -> dict[str, Handler]:
    """Handlers recording the emails of order and payment events."""
    deliver_within = timedelta(seconds=settings.delivery_deadline_seconds)

    async def on_order_event(event: ReceivedEvent, session: AsyncSession) -> None:
        try:
            await service.record_order_email(
                session=session,
                envelope=event.envelope,
                data=event.data,
                renderer=renderer,
                deliver_within=deliver_within,
            )
        except RecipientUnknown as exc:
            waited = (datetime.now(UTC) - event.envelope.occurred_at).total_seconds()
            if waited >= settings.recipient_wait_seconds:
                # Counted retries, then the dead-letter queue, where an operator can re-drive it.
                raise
            delays = settings.retry_delays_ms
            delay = delays[min(event.deferrals, len(delays) - 1)] / 1000
            log.info("notification.waiting_for_user", user_id=str(exc.user_id), retry_in=delay)
            raise RetryLater(delay, reason="recipient_unknown") from exc

    return dict.fromkeys(ORDER_EVENTS, on_order_event)
