"""The payments-gateway service's tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, Index, Numeric, String, Uuid, text
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


class PaymentStatus(StrEnum):
    """Where a payment stands."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"


class FailureReason(StrEnum):
    """Why a payment failed."""

    DECLINED = "declined"
    PROVIDER_UNAVAILABLE = "provider_unavailable"


class Payment(Base):
    """One order's payment; its id is the provider's idempotency key for the charge."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'refunded')", name="status_known"
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_payments_user_created", "user_id", "created_at", "id"),
        Index("ix_payments_created", "created_at", "id"),
        Index(
            "ix_payments_pending_updated",
            "updated_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    provider_reference: Mapped[str | None] = mapped_column(String(255))
    refund_reference: Mapped[str | None] = mapped_column(String(255))
    # The card token the charge is made with; kept only while the payment is pending, so that a
    # repeated charge request is byte-for-byte the first one (the provider replays it by key).
    source_token: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProviderWebhookEvent(Base):
    """A webhook delivery already applied; a second delivery of its id is a replay."""

    __tablename__ = "provider_webhook_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    payment_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


payments = Base.metadata.tables[Payment.__tablename__]
