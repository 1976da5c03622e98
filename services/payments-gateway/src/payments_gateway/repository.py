"""Every query of the payments-gateway service."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate

from payments_gateway.models import Payment, PaymentStatus, ProviderWebhookEvent, payments
from servicekit.db import bound_values

# Charging an order runs the same few statements for every payment. They are built once, with
# bound parameters, on the table rather than the mapped class: built per payment with the values
# in them, SQLAlchemy walked each one again for its cache key and ran it through the ORM's bulk
# insert and update paths, which cost more CPU than the round trips themselves.
_PENDING_COLUMNS = (
    "id",
    "order_id",
    "user_id",
    "amount",
    "currency",
    "status",
    "source_token",
    "created_at",
    "updated_at",
)
_ADD_PENDING = (
    insert(payments)
    .values(bound_values(payments, _PENDING_COLUMNS))
    .on_conflict_do_nothing(index_elements=[payments.c.order_id])
    .returning(*payments.c)
)
_BY_ORDER = select(*payments.c).where(payments.c.order_id == bindparam("order_id"))


@cache
def _transition_statement(columns: tuple[str, ...]) -> ReturningUpdate[tuple[object, ...]]:
    # One statement per set of columns a transition sets (three sets in all). The parameters
    # are prefixed: SQLAlchemy keeps a column's own name for its SET parameter.
    return (
        update(payments)
        .where(
            payments.c.id == bindparam("payment_id"),
            payments.c.status == bindparam("from_status"),
        )
        .values(bound_values(payments, columns, prefix="set_"))
        .returning(*payments.c)
    )


def _snapshot(row: Row[tuple[object, ...]]) -> Payment:
    """A payment as the statement returned it, not attached to the session."""
    return Payment(**row._mapping)


class PaymentRepository:
    """Payments by id, by order, by provider charge; guarded status changes; pages."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_pending(
        self,
        *,
        payment_id: uuid.UUID,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        amount: Decimal,
        currency: str,
        source_token: str,
        now: datetime,
    ) -> Payment:
        """The order's payment: this new pending one, or the one that already exists."""
        params = {
            "id": payment_id,
            "order_id": order_id,
            "user_id": user_id,
            "amount": amount,
            "currency": currency,
            "status": PaymentStatus.PENDING,
            "source_token": source_token,
            "created_at": now,
            "updated_at": now,
        }
        row = (await self.session.execute(_ADD_PENDING, params)).first()
        if row is None:
            # It exists (a redelivery, a second envelope): a conflicting insert still in flight
            # in another transaction made this one wait for it, so the row is there to read.
            row = (await self.session.execute(_BY_ORDER, {"order_id": order_id})).first()
        if row is None:  # pragma: no cover - the row was just inserted or found
            raise LookupError(f"payment of order {order_id} vanished")
        return _snapshot(row)

    async def get(self, payment_id: uuid.UUID) -> Payment | None:
        """The payment with this id."""
        return await self.session.get(Payment, payment_id, populate_existing=True)

    async def get_by_order(self, order_id: uuid.UUID) -> Payment | None:
        """The payment of an order."""
        stmt = (
            select(Payment)
            .where(Payment.order_id == order_id)
            .execution_options(populate_existing=True)
        )
        return await self.session.scalar(stmt)

    async def get_by_charge(self, charge_id: str) -> Payment | None:
        """The payment the provider made this charge for."""
        stmt = (
            select(Payment)
            .where(Payment.provider_reference == charge_id)
            .execution_options(populate_existing=True)
        )
        return await self.session.scalar(stmt)

    async def transition(
        self,
        payment_id: uuid.UUID,
        *,
        from_status: PaymentStatus,
        to_status: PaymentStatus,
        now: datetime,
        **values: Any,
    ) -> Payment | None:
        """Move a payment on if it still is in ``from_status``; None when it no longer is.

        The payment returned is a snapshot of the updated row; a copy of it loaded earlier in
        the same session is not refreshed.
        """
        # PostgreSQL re-checks the condition on the row's latest version once a concurrent
        # writer commits, so of two racing transitions exactly one wins.
        changes = {"status": to_status, "updated_at": now, **values}
        params = {f"set_{name}": value for name, value in changes.items()}
        params.update(payment_id=payment_id, from_status=from_status)
        row = (await self.session.execute(_transition_statement(tuple(changes)), params)).first()
        return None if row is None else _snapshot(row)

    async def await_webhook(self, payment_id: uuid.UUID, *, charge_id: str, now: datetime) -> bool:
        """Remember the pending charge a webhook will settle; False if already settled."""
        stmt = (
            update(Payment)
            .where(Payment.id == payment_id, Payment.status == PaymentStatus.PENDING)
            .values(provider_reference=charge_id, source_token=None, updated_at=now)
            .returning(Payment.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def awaiting_webhook(self, *, since_before: datetime, limit: int) -> list[Payment]:
        """Pending payments whose charge the provider answered pending before ``since_before``."""
        stmt = (
            select(Payment)
            .where(
                Payment.status == PaymentStatus.PENDING,
                Payment.provider_reference.is_not(None),
                Payment.updated_at < since_before,
            )
            .order_by(Payment.updated_at)
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

    async def stalled(self, *, since_before: datetime, limit: int) -> list[Payment]:
        """Pending payments not charged yet (no charge id) and unchanged since ``since_before``.

        A live delivery of their ``order.created`` either settles them in moments or defers
        them; one still here this late lost its message, or waits in a delay queue.
        """
        stmt = (
            select(Payment)
            .where(
                Payment.status == PaymentStatus.PENDING,
                Payment.provider_reference.is_(None),
                Payment.source_token.is_not(None),
                Payment.updated_at < since_before,
            )
            .order_by(Payment.updated_at)
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

    async def page(
        self,
        *,
        user_id: uuid.UUID | None,
        order_id: uuid.UUID | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Payment]:
        """Up to ``limit`` payments, newest first, after a keyset position."""
        stmt = select(Payment)
        if user_id is not None:
            stmt = stmt.where(Payment.user_id == user_id)
        if order_id is not None:
            stmt = stmt.where(Payment.order_id == order_id)
        if after is not None:
            created_at, last_id = after
            stmt = stmt.where(
                or_(
                    Payment.created_at < created_at,
                    and_(Payment.created_at == created_at, Payment.id < last_id),
                )
            )
        stmt = stmt.order_by(Payment.created_at.desc(), Payment.id.desc()).limit(limit)
        return list(await self.session.scalars(stmt))


class WebhookEventRepository:
    """The provider's webhook deliveries already applied."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(
        self, *, event_id: str, event_type: str, payment_id: uuid.UUID, now: datetime
    ) -> bool:
        """Record an event id; False when it was recorded before (a replay)."""
        stmt = (
            insert(ProviderWebhookEvent)
            .values(id=event_id, event_type=event_type, payment_id=payment_id, received_at=now)
            .on_conflict_do_nothing(index_elements=[ProviderWebhookEvent.id])
            .returning(ProviderWebhookEvent.id)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def purge(self, *, received_before: datetime) -> int:
        """Forget deliveries received before ``received_before``; how many were deleted."""
        result = await self.session.execute(
            delete(ProviderWebhookEvent)
            .where(ProviderWebhookEvent.received_at < received_before)
            .returning(ProviderWebhookEvent.id)
        )
        return len(result.all())
