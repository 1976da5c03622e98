"""Every query of the orders service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from orders_service.domain import OrderStatus
from orders_service.models import IdempotencyRecord, Order


class OrderRepository:
    """Loads and stores orders, their items and idempotency records in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, order: Order) -> None:
        """Stage a new order (with its items) for the next flush."""
        self.session.add(order)

    async def flush(self) -> None:
        """Write staged changes; a lost optimistic-concurrency race raises StaleDataError."""
        await self.session.flush()

    async def get(self, order_id: uuid.UUID, *, with_items: bool = True) -> Order | None:
        """One order by id (items loaded in one more statement), or None."""
        stmt = select(Order).where(Order.id == order_id)
        if with_items:
            stmt = stmt.options(selectinload(Order.items))
        result = await self.session.execute(stmt)
        return result.scalar_one_or_none()

    async def list_for_user(
        self,
        *,
        user_id: uuid.UUID,
        status: OrderStatus | None,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> Sequence[Order]:
        """Up to ``limit`` orders of a user, newest first, strictly after the keyset ``before``.

        Two statements whatever the page size: the orders, then every item of them.
        """
        stmt = select(Order).where(Order.user_id == user_id).options(selectinload(Order.items))
        if status is not None:
            stmt = stmt.where(Order.status == status.value)
        if before is not None:
            stmt = stmt.where(tuple_(Order.created_at, Order.id) < tuple_(*before))
        stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
        result = await self.session.execute(stmt)
        return result.scalars().all()

    async def pending_for_user(self, user_id: uuid.UUID) -> Sequence[Order]:
        """Every pending order of a user (without items)."""
        stmt = (
            select(Order)
            .where(Order.user_id == user_id, Order.status == OrderStatus.PENDING.value)
            .order_by(Order.created_at, Order.id)
        )
        result = await self.session.execute(stmt)
        return result.scalars().all()

    async def claim_idempotency_key(
        self, *, user_id: uuid.UUID, key: str, request_hash: str
    ) -> bool:
        """Insert the (user, key) record; False when it exists already.

        A concurrent claim of the same pair waits on the unique index until the first
        transaction ends, so exactly one request creates the order.
        """
        stmt = (
            insert(IdempotencyRecord)
            .values(user_id=user_id, key=key, request_hash=request_hash)
            .on_conflict_do_nothing(index_elements=["user_id", "key"])
            .returning(IdempotencyRecord.key)
        )
        result = await self.session.execute(stmt)
        return result.first() is not None

    async def get_idempotency_record(
        self, *, user_id: uuid.UUID, key: str
    ) -> IdempotencyRecord | None:
        """The stored record of a (user, key) pair, or None."""
        stmt = select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
        )
        result = await self.session.execute(stmt)
        return result.scalar_one_or_none()

    async def store_idempotent_response(
        self,
        *,
        user_id: uuid.UUID,
        key: str,
        order_id: uuid.UUID,
        status_code: int,
        body: str,
    ) -> None:
        """Remember the response given for a claimed (user, key) pair."""
        await self.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
            .values(order_id=order_id, response_status=status_code, response_body=body)
        )

    async def purge_idempotency_records(self, *, created_before: datetime) -> int:
        """Forget idempotency records older than ``created_before``; returns how many."""
        result = await self.session.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.created_at < created_before)
            .returning(IdempotencyRecord.key)
        )
        return len(result.all())
