"""The rules of the orders service: placing, reading, cancelling orders and applying payments.

Functions here write through the repository; the caller's transaction (the request's session or
the consumer's) commits, so the state change and the events it records land together or not at
all.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from orders_service.domain import OrderStatus, can_transition
from orders_service.errors import (
    IdempotencyKeyReused,
    InvalidStateTransition,
    OrderConcurrentlyModified,
    OrderNotFound,
    OrderNotYetKnown,
)
from orders_service.models import Order, OrderItem, utc_now
from orders_service.repository import OrderRepository
from orders_service.schemas import OrderCreate, OrderRead
from servicekit.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderFailed,
    OrderItemData,
    OrderRefundRequested,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
)
from servicekit.logging import get_logger
from servicekit.outbox import Outbox
from servicekit.pagination import decode_cursor, encode_cursor
from servicekit.security import Principal

log = get_logger(__name__)

CREATED = 201
REASON_CANCELLED_BY_USER = "cancelled_by_user"
REASON_CANCELLED_BY_ADMIN = "cancelled_by_admin"
REASON_USER_DELETED = "user_deleted"
REASON_DUPLICATE_PAYMENT = "duplicate_payment"
REASON_AMOUNT_MISMATCH = "amount_mismatch"


@dataclass(frozen=True)
class PlacedOrder:
    """The response to ``POST /orders``; ``replayed`` when an Idempotency-Key repeated it."""

    status_code: int
    body: str
    replayed: bool


@dataclass(frozen=True)
class OrderPageResult:
    """One page of orders and the cursor of the next one."""

    orders: Sequence[Order]
    next_cursor: str | None


# --- placing and reading orders --------------------------------------------------------------


def request_fingerprint(order_in: OrderCreate) -> str:
    """A stable hash of a normalised request body (so "10.5" and "10.50" are the same request)."""
    canonical = orjson.dumps(order_in.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


async def create_order(
    *,
    session: AsyncSession,
    outbox: Outbox,
    user_id: uuid.UUID,
    order_in: OrderCreate,
    idempotency_key: str | None,
) -> PlacedOrder:
    """Place an order and record ``order.created``; a repeated Idempotency-Key replays."""
    repository = OrderRepository(session)
    if idempotency_key is not None:
        fingerprint = request_fingerprint(order_in)
        claimed = await repository.claim_idempotency_key(
            user_id=user_id, key=idempotency_key, request_hash=fingerprint
        )
        if not claimed:
            return await _replay(repository, user_id, idempotency_key, fingerprint)

    now = utc_now()
    order = Order(
        id=uuid.uuid4(),
        user_id=user_id,
        status=OrderStatus.PENDING.value,
        currency=order_in.currency,
        total_amount=order_in.total_amount(),
        version=1,
        created_at=now,
        updated_at=now,
    )
    order.items = [
        OrderItem(
            id=uuid.uuid4(),
            order_id=order.id,
            position=position,
            sku=item.sku,
            quantity=item.quantity,
            unit_price=item.unit_price,
        )
        for position, item in enumerate(order_in.items)
    ]
    await repository.insert(order)
    await outbox.add(
        session,
        OrderCreated(
            order_id=order.id,
            user_id=user_id,
            items=[
                OrderItemData(sku=i.sku, quantity=i.quantity, unit_price=i.unit_price)
                for i in order.items
            ],
            total_amount=order.total_amount,
            currency=order.currency,
            payment_token=order_in.payment_token,
        ),
    )
    body = OrderRead.model_validate(order).model_dump_json()
    if idempotency_key is not None:
        await repository.store_idempotent_response(
            user_id=user_id, key=idempotency_key, order_id=order.id, status_code=CREATED, body=body
        )
    log.info("order.created", order_id=str(order.id), items=len(order.items))
    return PlacedOrder(status_code=CREATED, body=body, replayed=False)


async def _replay(
    repository: OrderRepository, user_id: uuid.UUID, key: str, fingerprint: str
) -> PlacedOrder:
    record = await repository.get_idempotency_record(user_id=user_id, key=key)
    if record is None or record.response_body is None or record.response_status is None:
        # Claimed by a transaction that has not committed its response: unreachable, since a
        # claim waits for the other transaction to end; kept as a conflict rather than a 500.
        raise IdempotencyKeyReused("This Idempotency-Key is being used by another request.")
    if record.request_hash != fingerprint:
        raise IdempotencyKeyReused()
    log.info("order.idempotent_replay", order_id=str(record.order_id))
    return PlacedOrder(status_code=record.response_status, body=record.response_body, replayed=True)


async def get_order(*, session: AsyncSession, principal: Principal, order_id: uuid.UUID) -> Order:
    """An order the caller owns (any order for an admin); others' orders are "not found"."""
    order = await OrderRepository(session).get(order_id)
    if order is None or not _may_see(principal, order):
        raise OrderNotFound()
    return order


async def list_orders(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    status: OrderStatus | None,
    limit: int,
    cursor: str | None,
) -> OrderPageResult:
    """A page of the user's own orders, newest first."""
    before = decode_cursor(cursor) if cursor is not None else None
    rows = await OrderRepository(session).list_for_user(
        user_id=user_id, status=status, limit=limit + 1, before=before
    )
    page = rows[:limit]
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit and page else None
    )
    return OrderPageResult(orders=page, next_cursor=next_cursor)


# --- changing status -------------------------------------------------------------------------


def transition(order: Order, target: OrderStatus, *, reason: str | None = None) -> None:
    """Move an order to ``target`` if the state machine allows it, else InvalidStateTransition."""
    current = order.order_status
    if not can_transition(current, target):
        raise InvalidStateTransition(
            f"An order that is {current.value} cannot become {target.value}."
        )
    order.status = target.value
    order.updated_at = utc_now()
    if reason is not None:
        order.status_reason = reason


async def save(repository: OrderRepository, order: Order) -> None:
    """Write the order's change; a concurrent change of it (stale version) becomes a 409."""
    if not await repository.save(order):
        raise OrderConcurrentlyModified()


async def cancel_order(
    *, session: AsyncSession, outbox: Outbox, principal: Principal, order_id: uuid.UUID
) -> Order:
    """Cancel a pending order, or ask for a refund of a confirmed one."""
    repository = OrderRepository(session)
    order = await repository.get(order_id)
    if order is None or not _may_see(principal, order):
        raise OrderNotFound()
    by_owner = order.user_id == principal.user_id
    reason = REASON_CANCELLED_BY_USER if by_owner else REASON_CANCELLED_BY_ADMIN
    if order.order_status is OrderStatus.CONFIRMED:
        transition(order, OrderStatus.REFUND_PENDING, reason=reason)
        await save(repository, order)
        await _request_refund(
            session,
            outbox,
            order,
            payment_id=order.payment_id,
            amount=order.total_amount,
            currency=order.currency,
            reason=reason,
        )
    else:
        transition(order, OrderStatus.CANCELLED, reason=reason)
        await save(repository, order)
        await _record_cancelled(session, outbox, order, reason)
    return order


async def apply_payment_succeeded(
    *, session: AsyncSession, outbox: Outbox, payment: PaymentSucceeded
) -> None:
    """Confirm a pending order; a payment for an order that can no longer take it is refunded."""
    repository = OrderRepository(session)
    order = await _order_for_event(repository, payment.order_id)
    if order.payment_id == payment.payment_id:
        log.info("order.payment_already_applied", order_id=str(order.id))
        return
    status = order.order_status
    if status is OrderStatus.PENDING and _matches(order, payment):
        transition(order, OrderStatus.CONFIRMED)
        order.payment_id = payment.payment_id
        await save(repository, order)
        await outbox.add(
            session,
            OrderConfirmed(
                order_id=order.id,
                user_id=order.user_id,
                total_amount=order.total_amount,
                currency=order.currency,
                payment_id=payment.payment_id,
            ),
        )
        log.info("order.confirmed", order_id=str(order.id), payment_id=str(payment.payment_id))
        return

    if status is OrderStatus.PENDING:
        # Never confirm an order for a sum other than its total: fail it and give the money back.
        log.warning(
            "order.payment_amount_mismatch",
            order_id=str(order.id),
            paid=f"{payment.amount} {payment.currency}",
            total=f"{order.total_amount} {order.currency}",
        )
        transition(order, OrderStatus.FAILED, reason=REASON_AMOUNT_MISMATCH)
        reason = REASON_AMOUNT_MISMATCH
    elif order.payment_id is not None:
        reason = REASON_DUPLICATE_PAYMENT
    else:
        reason = f"order_{status.value}"
    # A cancelled or failed order keeps its status; remembering the payment makes a repeat of
    # this event a no-op instead of a second refund.
    if order.payment_id is None:
        order.payment_id = payment.payment_id
        order.updated_at = utc_now()
        await save(repository, order)
    if reason == REASON_AMOUNT_MISMATCH:
        await _record_failed(session, outbox, order, reason)
    await _request_refund(
        session,
        outbox,
        order,
        payment_id=payment.payment_id,
        amount=payment.amount,
        currency=payment.currency,
        reason=reason,
    )


async def apply_payment_failed(
    *, session: AsyncSession, outbox: Outbox, payment: PaymentFailed
) -> None:
    """Fail a pending order; for any other status the failure changes nothing."""
    repository = OrderRepository(session)
    order = await _order_for_event(repository, payment.order_id)
    if order.order_status is not OrderStatus.PENDING:
        log.info("order.payment_failure_ignored", order_id=str(order.id), status=order.status)
        return
    transition(order, OrderStatus.FAILED, reason=payment.reason)
    await save(repository, order)
    await _record_failed(session, outbox, order, payment.reason)


async def apply_payment_refunded(*, session: AsyncSession, refund: PaymentRefunded) -> None:
    """Complete a refund the order asked for; refunds of other payments change nothing.

    A cancelled or failed order whose late payment was refunded automatically stays as it is:
    the money went back and the order never counted as paid. So does a paid order whose
    duplicate payment was refunded.
    """
    repository = OrderRepository(session)
    order = await _order_for_event(repository, refund.order_id)
    if order.order_status is OrderStatus.REFUND_PENDING and order.payment_id == refund.payment_id:
        transition(order, OrderStatus.REFUNDED)
        await save(repository, order)
        log.info("order.refunded", order_id=str(order.id), payment_id=str(refund.payment_id))
        return
    log.info(
        "order.refund_noted",
        order_id=str(order.id),
        status=order.status,
        payment_id=str(refund.payment_id),
    )


async def rerequest_refund(*, session: AsyncSession, outbox: Outbox, order: Order) -> bool:
    """Ask again for the refund of an order still ``refund_pending``; False if it moved on."""
    if order.order_status is not OrderStatus.REFUND_PENDING:
        return False
    order.updated_at = utc_now()  # the next re-request waits a full period again
    if not await OrderRepository(session).save(order):
        return False  # changed meanwhile (refunded): nothing to ask for
    await _request_refund(
        session,
        outbox,
        order,
        payment_id=order.payment_id,
        amount=order.total_amount,
        currency=order.currency,
        reason=order.status_reason or "refund_rerequested",
    )
    log.warning("order.refund_rerequested", order_id=str(order.id))
    return True


async def cancel_orders_of_deleted_user(
    *, session: AsyncSession, outbox: Outbox, user_id: uuid.UUID
) -> int:
    """Cancel every pending order of a deleted user; paid orders are left as they are."""
    repository = OrderRepository(session)
    orders = await repository.pending_for_user(user_id)
    for order in orders:
        transition(order, OrderStatus.CANCELLED, reason=REASON_USER_DELETED)
        await save(repository, order)
        await _record_cancelled(session, outbox, order, REASON_USER_DELETED)
    log.info("order.user_orders_cancelled", user_id=str(user_id), cancelled=len(orders))
    return len(orders)


# --- helpers ---------------------------------------------------------------------------------


def _may_see(principal: Principal, order: Order) -> bool:
    return order.user_id == principal.user_id or principal.is_admin


def _matches(order: Order, payment: PaymentSucceeded) -> bool:
    return payment.amount == order.total_amount and payment.currency == order.currency


async def _order_for_event(repository: OrderRepository, order_id: uuid.UUID) -> Order:
    order = await repository.get(order_id, with_items=False)
    if order is None:
        raise OrderNotYetKnown(f"order {order_id} is not stored (yet)")
    return order


async def _record_cancelled(
    session: AsyncSession, outbox: Outbox, order: Order, reason: str
) -> None:
    await outbox.add(
        session,
        OrderCancelled(
            order_id=order.id,
            user_id=order.user_id,
            total_amount=order.total_amount,
            currency=order.currency,
            reason=reason,
        ),
    )
    log.info("order.cancelled", order_id=str(order.id), reason=reason)


async def _record_failed(session: AsyncSession, outbox: Outbox, order: Order, reason: str) -> None:
    await outbox.add(
        session,
        OrderFailed(
            order_id=order.id,
            user_id=order.user_id,
            total_amount=order.total_amount,
            currency=order.currency,
            reason=reason,
        ),
    )
    log.info("order.failed", order_id=str(order.id), reason=reason)


async def _request_refund(
    session: AsyncSession,
    outbox: Outbox,
    order: Order,
    *,
    payment_id: uuid.UUID | None,
    amount: Decimal,
    currency: str,
    reason: str,
) -> None:
    await outbox.add(
        session,
        OrderRefundRequested(
            order_id=order.id,
            user_id=order.user_id,
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            reason=reason,
        ),
    )
    log.info(
        "order.refund_requested",
        order_id=str(order.id),
        payment_id=str(payment_id) if payment_id else None,
        reason=reason,
    )
