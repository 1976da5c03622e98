"""Every query of the orders service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, exists, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from orders_service.domain import OrderStatus
from orders_service.models import (
    DeletedUser,
    IdempotencyRecord,
    Order,
    OrderItem,
    order_items,
    orders,
    outbox,
)
from servicekit.db import bound_values

# Placing an order and moving it through the saga run the same few statements for every order.
# They are built once, with bound parameters, on the tables: through the ORM's unit of work
# (add, flush, a versioned UPDATE per dirty object) each transaction cost about a third more
# CPU.
# The orders they load are snapshots, not attached to the session; a change is written back
# with ``save``, never by a flush.
_ORDER_COLUMNS = tuple(column.name for column in orders.c)
_ITEM_COLUMNS = tuple(column.name for column in order_items.c)
_INSERT_ORDER = orders.insert().values(bound_values(orders, _ORDER_COLUMNS))
_INSERT_ITEM = order_items.insert().values(bound_values(order_items, _ITEM_COLUMNS))
_BY_ID = select(*orders.c).where(orders.c.id == bindparam("order_id"))
_ITEMS_OF = (
    select(*order_items.c)
    .where(order_items.c.order_id == bindparam("order_id"))
    .order_by(order_items.c.position)
)
# Placing an order holds the user's lock shared, applying user.deleted holds it exclusively: an
# order is either placed before the deletion (which then cancels it) or refused after it.
_LOCK_USER_SHARED = text("SELECT pg_advisory_xact_lock_shared(hashtextextended(:key, 0))")
_LOCK_USER = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_PENDING_OF_USER = (
    select(*orders.c)
    .where(orders.c.user_id == bindparam("user_id"), orders.c.status == OrderStatus.PENDING.value)
    .order_by(orders.c.created_at, orders.c.id)
)
# Optimistic concurrency: the change lands only on the version it was made from, and bumps it.
# A writer that waited for another's row lock finds the version moved on and changes nothing.
# (The parameters are prefixed: SQLAlchemy keeps a column's own name for its SET parameter.)
_MUTABLE_COLUMNS = ("status", "status_reason", "payment_id", "updated_at")
_SAVE = (
    update(orders)
    .where(orders.c.id == bindparam("order_id"), orders.c.version == bindparam("read_version"))
    .values(
        {**bound_values(orders, _MUTABLE_COLUMNS, prefix="set_"), "version": orders.c.version + 1}
    )
    .returning(orders.c.version)
)


def _snapshot(row: Row[tuple[object, ...]]) -> Order:
    """An order as the statement returned it, not attached to the session."""
    return Order(**row._mapping)


_ORDER_CREATED_OF = outbox.c.payload[("data", "order_id")].astext


class OrderRepository:
    """Loads and stores orders, their items and idempotency records in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, order: Order) -> None:
        """Store a new order and its items (built in memory, with every column set)."""
        await self.session.execute(
            _INSERT_ORDER, {name: getattr(order, name) for name in _ORDER_COLUMNS}
        )
        items = [{name: getattr(item, name) for name in _ITEM_COLUMNS} for item in order.items]
        if items:
            await self.session.execute(_INSERT_ITEM, items)

    async def get(self, order_id: uuid.UUID, *, with_items: bool = True) -> Order | None:
        """A snapshot of one order (its items read by one more statement), or None."""
        row = (await self.session.execute(_BY_ID, {"order_id": order_id})).first()
        if row is None:
            return None
        order = _snapshot(row)
        if with_items:
            items = await self.session.execute(_ITEMS_OF, {"order_id": order_id})
            order.items = [OrderItem(**item._mapping) for item in items]
        return order

    async def save(self, order: Order) -> bool:
        """Write an order's status fields; False when it changed since it was read.

        On success the snapshot takes the new version, so it can be saved again.
        """
        params = {f"set_{name}": getattr(order, name) for name in _MUTABLE_COLUMNS}
        params.update(order_id=order.id, read_version=order.version)
        row = (await self.session.execute(_SAVE, params)).first()
        if row is None:
            return False
        order.version = row.version
        return True

    async def list_for_user(
        self,
        *,
        user_id: uuid.UUID,
        status: OrderStatus | None,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> Sequence[Order]:
        """Up to ``limit`` orders of a user, newest first, strictly after the keyset ``before``.

        Two statements whatever the page size: the orders, then every item of them. They are
        loaded into the session, for reading only.
        """
        stmt = select(Order).where(Order.user_id == user_id).options(selectinload(Order.items))
        if status is not None:
            stmt = stmt.where(Order.status == status.value)
        if before is not None:
            stmt = stmt.where(tuple_(Order.created_at, Order.id) < tuple_(*before))
        stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
        result = await self.session.execute(stmt)
        return result.scalars().all()

    async def pending_for_user(self, user_id: uuid.UUID) -> list[Order]:
        """Snapshots of every pending order of a user (without items), oldest first."""
        rows = await self.session.execute(_PENDING_OF_USER, {"user_id": user_id})
        return [_snapshot(row) for row in rows]

    async def in_flight(
        self, status: OrderStatus, *, unchanged_since: datetime, limit: int
    ) -> list[Order]:
        """Snapshots of orders in ``status`` not changed since ``unchanged_since``, oldest first."""
        stmt = (
            select(*orders.c)
            .where(orders.c.status == status.value, orders.c.updated_at < unchanged_since)
            .order_by(orders.c.updated_at)
            .limit(limit)
        )
        return [_snapshot(row) for row in await self.session.execute(stmt)]

    async def announcements(self, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
        """The ``data`` of each of these orders' ``order.created`` still in the outbox."""
        if not order_ids:
            return {}
        stmt = select(_ORDER_CREATED_OF, outbox.c.payload["data"]).where(
            outbox.c.event_type == "order.created",
            _ORDER_CREATED_OF.in_([str(order_id) for order_id in order_ids]),
        )
        return {uuid.UUID(row[0]): row[1] for row in await self.session.execute(stmt)}

    async def lock_user(self, user_id: uuid.UUID, *, exclusive: bool) -> None:
        """Serialise with the transactions placing orders for, or deleting, the user."""
        statement = _LOCK_USER if exclusive else _LOCK_USER_SHARED
        await self.session.execute(statement, {"key": f"orders.user:{user_id}"})

    async def mark_user_deleted(self, user_id: uuid.UUID, *, deleted_at: datetime) -> None:
        """Remember that the user was deleted (a repeat changes nothing)."""
        await self.session.execute(
            insert(DeletedUser)
            .values(user_id=user_id, deleted_at=deleted_at)
            .on_conflict_do_nothing(index_elements=[DeletedUser.user_id])
        )

    async def user_was_deleted(self, user_id: uuid.UUID) -> bool:
        """True once ``user.deleted`` of the user was applied."""
        return bool(
            await self.session.scalar(select(exists().where(DeletedUser.user_id == user_id)))
        )

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
