"""Every query of the notifications service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Interval,
    bindparam,
    case,
    delete,
    func,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notifications_service.models import (
    DeliveryStatus,
    ErasedUser,
    Notification,
    UserContact,
    notifications,
)
from servicekit import tracecontext
from servicekit.db import bound_values
from servicekit.logging import current_correlation_id

DISPATCH_CHANNEL = "notifications_due"
_OPEN = (DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value)

# Every email runs the same statements: its contact read, its row recorded, its delivery marked.
# They are built once with bound parameters: built per email with the values in them,
# SQLAlchemy walked each again for its cache key every time.
_CONTACT = select(UserContact).where(UserContact.user_id == bindparam("user_id"))
_CONTACT_SHARED = _CONTACT.with_for_update(read=True)
_PENDING_COLUMNS = (
    "id",
    "user_id",
    "event_id",
    "event_type",
    "template",
    "recipient",
    "recipient_name",
    "subject",
    "body_text",
    "body_html",
    "correlation_id",
    "traceparent",
)
# One round trip: the row, and (only if it was new) the wake-up the dispatchers get at commit.
_ADDED = (
    insert(notifications)
    .values(
        {
            **bound_values(notifications, _PENDING_COLUMNS),
            "deliver_by": func.now() + bindparam("deliver_within", type_=Interval()),
        }
    )
    .on_conflict_do_nothing(index_elements=[notifications.c.event_id, notifications.c.template])
    .returning(notifications.c.id)
    .cte("added")
)
_ADD_PENDING = select(_ADDED.c.id, func.pg_notify(DISPATCH_CHANNEL, literal(""))).select_from(
    _ADDED
)
_MARK_SENT = (
    update(notifications)
    .where(
        notifications.c.id == bindparam("notification_id"),
        notifications.c.status == DeliveryStatus.SENDING.value,
        notifications.c.attempts == bindparam("attempt"),
    )
    .values(status=DeliveryStatus.SENT.value, sent_at=func.now(), last_error=None)
    .returning(notifications.c.id)
)


class ContactRepository:
    """The per-user projection (email, name) and the tombstones of erased users."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_user(self, user_id: uuid.UUID) -> None:
        """Serialise this transaction with others touching the same user (until it ends)."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"notifications.user:{user_id}"},
        )

    async def is_erased(self, user_id: uuid.UUID) -> bool:
        """True when the user was deleted."""
        found = await self.session.scalar(
            select(ErasedUser.user_id).where(ErasedUser.user_id == user_id)
        )
        return found is not None

    async def upsert_if_newer(
        self, *, user_id: uuid.UUID, email: str, name: str, as_of: datetime
    ) -> bool:
        """Store the contact unless a newer (or equally new) version is already stored."""
        new = insert(UserContact).values(user_id=user_id, email=email, name=name, as_of=as_of)
        stmt = new.on_conflict_do_update(
            index_elements=[UserContact.user_id],
            set_={"email": new.excluded.email, "name": new.excluded.name, "as_of": as_of},
            where=UserContact.as_of < new.excluded.as_of,
        ).returning(UserContact.user_id)
        return (await self.session.execute(stmt)).first() is not None

    async def get(self, user_id: uuid.UUID, *, lock: bool = False) -> UserContact | None:
        """The user's contact; ``lock`` holds a share lock so an erasure waits for us."""
        stmt = _CONTACT_SHARED if lock else _CONTACT
        return await self.session.scalar(stmt, {"user_id": user_id})

    async def erase(self, *, user_id: uuid.UUID, erased_at: datetime) -> None:
        """Forget the user's contact and remember only that the id was erased."""
        await self.session.execute(
            insert(ErasedUser).values(user_id=user_id, erased_at=erased_at).on_conflict_do_nothing()
        )
        await self.session.execute(delete(UserContact).where(UserContact.user_id == user_id))


class NotificationRepository:
    """The recorded notifications: reads for the API and the dispatcher's state changes."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_pending(
        self,
        *,
        user_id: uuid.UUID,
        event_id: uuid.UUID,
        event_type: str,
        template: str,
        recipient: str,
        recipient_name: str,
        subject: str,
        body_text: str,
        body_html: str,
        deliver_within: timedelta,
    ) -> uuid.UUID | None:
        """Record a notification to send; None when this (event, template) is already recorded.

        A new row wakes every instance's dispatcher once this transaction commits.
        """
        params = {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "event_id": event_id,
            "event_type": event_type,
            "template": template,
            "recipient": recipient,
            "recipient_name": recipient_name,
            "subject": subject,
            "body_text": body_text,
            "body_html": body_html,
            "correlation_id": current_correlation_id(),
            "traceparent": tracecontext.current_traceparent(),
            "deliver_within": deliver_within,
        }
        added: uuid.UUID | None = await self.session.scalar(_ADD_PENDING, params)
        return added

    async def get_for_user(
        self, *, notification_id: uuid.UUID, user_id: uuid.UUID
    ) -> Notification | None:
        """One notification, only if it belongs to the user."""
        return await self.session.scalar(
            select(Notification).where(
                Notification.id == notification_id, Notification.user_id == user_id
            )
        )

    async def list_for_user(
        self,
        *,
        user_id: uuid.UUID,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> Sequence[Notification]:
        """Up to ``limit`` of the user's notifications, newest first, older than ``before``."""
        stmt = select(Notification).where(Notification.user_id == user_id)
        if before is not None:
            stmt = stmt.where(tuple_(Notification.created_at, Notification.id) < tuple_(*before))
        stmt = stmt.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
        return (await self.session.scalars(stmt)).all()

    async def delete_for_user(self, user_id: uuid.UUID) -> int:
        """Delete every notification of the user; returns how many there were."""
        result = await self.session.execute(
            delete(Notification).where(Notification.user_id == user_id).returning(Notification.id)
        )
        return len(result.all())

    async def claim_due(self, *, limit: int, lease: timedelta) -> Sequence[Notification]:
        """Claim up to ``limit`` due rows: `sending`, one more attempt, leased."""
        # Due: `pending` whose retry time came, or `sending` whose lease expired (its sender
        # died). SKIP LOCKED lets several dispatchers claim disjoint rows.
        due = (
            select(Notification.id)
            .where(Notification.status.in_(_OPEN), Notification.next_attempt_at <= func.now())
            .order_by(Notification.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(Notification)
            .where(Notification.id.in_(due))
            .values(
                status=DeliveryStatus.SENDING.value,
                attempts=Notification.attempts + 1,
                next_attempt_at=func.now() + lease,
            )
            .returning(Notification)
        )
        return (await self.session.scalars(stmt)).all()

    async def mark_sent(self, *, notification_id: uuid.UUID, attempt: int) -> bool:
        """Record the server's acceptance of the claimed attempt."""
        result = await self.session.execute(
            _MARK_SENT, {"notification_id": notification_id, "attempt": attempt}
        )
        return result.first() is not None

    async def mark_attempt_failed(
        self,
        *,
        notification_id: uuid.UUID,
        attempt: int,
        error: str,
        retry_in: timedelta | None,
    ) -> str | None:
        """Schedule a retry (capped at the deadline) or fail the row; returns its new status."""
        # retry_in None: the refusal is permanent. At or past the deadline the row fails too.
        # None comes back when the row is no longer this attempt's (deleted, or re-claimed).
        status: ColumnElement[str]
        next_attempt: ColumnElement[datetime]
        if retry_in is None:
            status = literal(DeliveryStatus.FAILED.value)
            next_attempt = Notification.next_attempt_at.expression
        else:
            expired = func.now() >= Notification.deliver_by
            status = case(
                (expired, DeliveryStatus.FAILED.value), else_=DeliveryStatus.PENDING.value
            )
            next_attempt = func.least(func.now() + retry_in, Notification.deliver_by)
        result = await self.session.execute(
            update(Notification)
            .where(
                Notification.id == notification_id,
                Notification.status == DeliveryStatus.SENDING.value,
                Notification.attempts == attempt,
            )
            .values(status=status, next_attempt_at=next_attempt, last_error=error)
            .returning(Notification.status)
        )
        return result.scalar()

    async def next_due_at(self) -> datetime | None:
        """When the earliest open row becomes due (None when nothing is open)."""
        return await self.session.scalar(
            select(func.min(Notification.next_attempt_at)).where(Notification.status.in_(_OPEN))
        )
