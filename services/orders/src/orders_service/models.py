"""The orders service's tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orders_service.domain import OrderStatus
from servicekit.db import new_metadata
from servicekit.inbox import inbox_table
from servicekit.outbox import outbox_table

MONEY = Numeric(12, 2, asdecimal=True)
STATUS_VALUES = ", ".join(f"'{status.value}'" for status in OrderStatus)


def utc_now() -> datetime:
    """The current time, aware and in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = new_metadata()


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)


class Order(Base):
    """An order of one user; its status only changes through the service's transitions."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(f"status IN ({STATUS_VALUES})", name="status"),
        CheckConstraint("total_amount > 0", name="total_positive"),
        Index("ix_orders_user_id_created_at_id", "user_id", "created_at", "id"),
        # The in-flight sweeper's lookup: orders still waiting for payments, oldest first.
        Index(
            "ix_orders_in_flight_updated_at",
            "updated_at",
            postgresql_where=text("status IN ('pending', 'refund_pending')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=OrderStatus.PENDING)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    total_amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    status_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utc_now
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utc_now
    )

    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order",
        lazy="raise",
        order_by="OrderItem.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    # Optimistic concurrency: every UPDATE says "WHERE version = <what I read>" and bumps it.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - read once by the mapper

    @property
    def order_status(self) -> OrderStatus:
        """The status as the enum."""
        return OrderStatus(self.status)


class OrderItem(Base):
    """One line of an order."""

    __tablename__ = "order_items"
    __table_args__ = (
        CheckConstraint("quantity BETWEEN 1 AND 1000", name="quantity_range"),
        CheckConstraint("unit_price > 0", name="unit_price_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    sku: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_price: Mapped[Decimal] = mapped_column(MONEY, nullable=False)

    order: Mapped[Order] = relationship(back_populates="items", lazy="raise")

    @property
    def line_total(self) -> Decimal:
        """Quantity times unit price, exact."""
        return self.unit_price * self.quantity


# The tables themselves, for the statements the hot paths build once (see repository.py).
orders = Base.metadata.tables[Order.__tablename__]
order_items = Base.metadata.tables[OrderItem.__tablename__]


class IdempotencyRecord(Base):
    """The first response to a (user, Idempotency-Key) pair, replayed for repeats."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=True
    )
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The exact bytes sent the first time (JSONB would reorder the keys of a replay).
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utc_now, index=True
    )
