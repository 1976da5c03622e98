"""The notifications service's tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from servicekit.db import new_metadata
from servicekit.inbox import inbox_table
from servicekit.outbox import outbox_table
from servicekit.revocation import revocation_table


class Base(DeclarativeBase):
    metadata = new_metadata()


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
revocations = revocation_table(Base.metadata)


class DeliveryStatus(StrEnum):
    """Where a notification stands; `sending` is internal and shown as `pending`."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class UserContact(Base):
    """This service's projection of a user: where to mail them and how to greet them."""

    __tablename__ = "user_contacts"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(Text)
    # The producer's time of the newest event applied; older events arriving late are ignored.
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ErasedUser(Base):
    """A deleted user's id only, so a late `user.registered`/`user.updated` cannot revive them."""

    __tablename__ = "erased_users"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Notification(Base):
    """One email for one (event, template), rendered when recorded and sent by the dispatcher."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "template", name="uq_notifications_event_id_template"),
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="status_known"),
        Index("ix_notifications_user_newest", "user_id", "created_at", "id"),
        Index(
            "ix_notifications_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID]
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(200))
    template: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(20), server_default="email")
    recipient: Mapped[str] = mapped_column(String(320))
    recipient_name: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), server_default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the dispatcher should next look at the row: the retry time while `pending`, the
    # lease expiry while `sending` (one column, one index for both).
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    deliver_by: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    # The causing event's correlation id and trace context, so the send (done later by the
    # dispatcher) logs and traces as part of the order or registration that caused it.
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    traceparent: Mapped[str | None] = mapped_column(String(100))


# The table itself, for the statements the per-email path builds once (see repository.py).
notifications = Base.metadata.tables[Notification.__tablename__]
