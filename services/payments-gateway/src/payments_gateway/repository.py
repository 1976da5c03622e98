"""Every query of the payments-gateway service."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payments_gateway.models import Payment, PaymentStatus, ProviderWebhookEvent


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
        await self.session.execute(
            insert(Payment)
            .values(
                id=payment_id,
                order_id=order_id,
                user_id=user_id,
                amount=amount,
                currency=currency,
                status=PaymentStatus.PENDING,
                source_token=source_token,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[Payment.order_id])
        )
        payment = await self.get_by_order(order_id)
        if payment is None:  # pragma: no cover - the row was just inserted or found
            raise LookupError(f"payment of order {order_id} vanished")
        return payment

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
        """Move a payment on if it still is in ``from_status``; None when it no longer is."""
        # PostgreSQL re-checks the condition on the row's latest version once a concurrent
        # writer commits, so of two racing transitions exactly one wins.
        stmt = (
            update(Payment)
            .where(Payment.id == payment_id, Payment.status == from_status)
            .values(status=to_status, updated_at=now, **values)
            .returning(Payment)
            .execution_options(populate_existing=True, synchronize_session=False)
        )
        return await self.session.scalar(stmt)

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
