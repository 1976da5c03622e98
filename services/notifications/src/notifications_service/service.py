"""The rules: keeping the user projection, recording notifications, reading them back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from notifications_service.errors import NotificationNotFound, RecipientUnknown
from notifications_service.models import Notification
from notifications_service.rendering import EmailRenderer
from notifications_service.repository import ContactRepository, NotificationRepository
from servicekit.events import (
    EventData,
    EventEnvelope,
    OrderCancelled,
    OrderConfirmed,
    OrderFailed,
    PaymentRefunded,
    UserDeleted,
    UserRegistered,
    UserUpdated,
)
from servicekit.logging import get_logger
from servicekit.pagination import decode_cursor, encode_cursor

log = get_logger(__name__)

WELCOME = "welcome"

_FAILURE_REASONS = {
    "declined": "the payment was declined",
    "provider_unavailable": "the payment could not be processed in time",
}
_CANCEL_REASONS = {
    "cancelled_by_user": "at your request",
    "user_deleted": "your account was closed",
}


@dataclass(frozen=True)
class Page:
    """One page of a list and the cursor of the next one."""

    items: Sequence[Notification]
    next_cursor: str | None


# --- the projection ------------------------------------------------------------------------


async def apply_user_registered(
    *,
    session: AsyncSession,
    envelope: EventEnvelope,
    data: UserRegistered,
    renderer: EmailRenderer,
    deliver_within: timedelta,
) -> None:
    """Project a new user and record their welcome email."""
    contacts = ContactRepository(session)
    await contacts.lock_user(data.user_id)
    if await contacts.is_erased(data.user_id):
        log.info("user.ignored_erased", user_id=str(data.user_id))
        return
    await contacts.upsert_if_newer(
        user_id=data.user_id, email=data.email, name=data.name, as_of=data.registered_at
    )
    # A newer user.updated may have been applied first: welcome them at their current address.
    contact = await contacts.get(data.user_id)
    if contact is None:
        return
    await _record(
        session=session,
        envelope=envelope,
        user_id=data.user_id,
        template=WELCOME,
        recipient=contact.email,
        name=contact.name,
        context={},
        renderer=renderer,
        deliver_within=deliver_within,
    )


async def apply_user_updated(*, session: AsyncSession, data: UserUpdated) -> None:
    """Update the user's projection unless a newer version is already stored."""
    contacts = ContactRepository(session)
    await contacts.lock_user(data.user_id)
    if await contacts.is_erased(data.user_id):
        log.info("user.ignored_erased", user_id=str(data.user_id))
        return
    applied = await contacts.upsert_if_newer(
        user_id=data.user_id, email=data.email, name=data.name, as_of=data.updated_at
    )
    if not applied:
        log.info("user.update_ignored_stale", user_id=str(data.user_id))


async def erase_user(*, session: AsyncSession, data: UserDeleted) -> None:
    """Forget the user's contact and every notification recorded for them."""
    contacts = ContactRepository(session)
    await contacts.lock_user(data.user_id)
    await contacts.erase(user_id=data.user_id, erased_at=data.deleted_at)
    removed = await NotificationRepository(session).delete_for_user(data.user_id)
    log.info("user.erased", user_id=str(data.user_id), notifications_removed=removed)


# --- order and payment emails --------------------------------------------------------------


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def order_email(data: EventData) -> tuple[str, uuid.UUID, dict[str, Any]]:
    """The template, user and template context of an order or payment event."""
    match data:
        case OrderConfirmed():
            return "order_confirmed", data.user_id, _order_context(data.order_id, data)
        case OrderFailed():
            reason = _FAILURE_REASONS.get(data.reason, "the payment did not go through")
            context = {**_order_context(data.order_id, data), "reason": reason}
            return "order_failed", data.user_id, context
        case OrderCancelled():
            reason = _CANCEL_REASONS.get(data.reason, data.reason.replace("_", " "))
            context = {**_order_context(data.order_id, data), "reason": reason}
            return "order_cancelled", data.user_id, context
        case PaymentRefunded():
            context = {
                "order_id": str(data.order_id),
                "short_id": short_id(data.order_id),
                "total": _money(data.amount),
                "currency": data.currency,
                "reference": data.provider_reference,
            }
            return "payment_refunded", data.user_id, context
    raise TypeError(f"no email for {type(data).__name__}")


def short_id(order_id: uuid.UUID) -> str:
    """The short form of an order id people can read out (its first eight hex digits)."""
    return order_id.hex[:8].upper()


def _order_context(
    order_id: uuid.UUID, data: OrderConfirmed | OrderFailed | OrderCancelled
) -> dict[str, Any]:
    return {
        "order_id": str(order_id),
        "short_id": short_id(order_id),
        "total": _money(data.total_amount),
        "currency": data.currency,
    }


async def record_order_email(
    *,
    session: AsyncSession,
    envelope: EventEnvelope,
    data: EventData,
    renderer: EmailRenderer,
    deliver_within: timedelta,
) -> None:
    """Record the email an order or payment event calls for (RecipientUnknown if no contact yet)."""
    template, user_id, context = order_email(data)
    contacts = ContactRepository(session)
    # The share lock makes a concurrent erasure wait until this email is recorded, so the
    # erasure then deletes it too.
    contact = await contacts.get(user_id, lock=True)
    if contact is None:
        # An erased user gets no email; anyone else's contact is on its way.
        if await contacts.is_erased(user_id):
            log.info("notification.skipped_erased_user", user_id=str(user_id), template=template)
            return
        raise RecipientUnknown(user_id)
    await _record(
        session=session,
        envelope=envelope,
        user_id=user_id,
        template=template,
        recipient=contact.email,
        name=contact.name,
        context=context,
        renderer=renderer,
        deliver_within=deliver_within,
    )


async def _record(
    *,
    session: AsyncSession,
    envelope: EventEnvelope,
    user_id: uuid.UUID,
    template: str,
    recipient: str,
    name: str,
    context: dict[str, Any],
    renderer: EmailRenderer,
    deliver_within: timedelta,
) -> None:
    rendered = renderer.render(template, {**context, "name": name})
    notifications = NotificationRepository(session)
    notification_id = await notifications.add_pending(
        user_id=user_id,
        event_id=envelope.id,
        event_type=envelope.type,
        template=template,
        recipient=recipient,
        recipient_name=name,
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
        deliver_within=deliver_within,
    )
    if notification_id is None:
        log.info("notification.already_recorded", template=template)
        return
    log.info(
        "notification.recorded",
        notification_id=str(notification_id),
        user_id=str(user_id),
        template=template,
    )


# --- reading ---------------------------------------------------------------------------------


async def get_notification(
    *, session: AsyncSession, user_id: uuid.UUID, notification_id: uuid.UUID
) -> Notification:
    """The caller's notification (NotificationNotFound for unknown or someone else's)."""
    found = await NotificationRepository(session).get_for_user(
        notification_id=notification_id, user_id=user_id
    )
    if found is None:
        raise NotificationNotFound()
    return found


async def list_notifications(
    *, session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page:
    """One page of the caller's notifications, newest first."""
    before = decode_cursor(cursor) if cursor else None
    rows = await NotificationRepository(session).list_for_user(
        user_id=user_id, limit=limit + 1, before=before
    )
    items = rows[:limit]
    has_more = len(rows) > limit
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if has_more else None
    return Page(items=items, next_cursor=next_cursor)
