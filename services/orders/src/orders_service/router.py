"""HTTP routes of the orders service: validate, call one service function, respond."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from orders_service import service
from orders_service.dependencies import CurrentUser, IdempotencyKey, OutboxDep, SessionDep
from orders_service.domain import OrderStatus
from orders_service.schemas import OrderCreate, OrderPage, OrderRead
from servicekit.errors import error_responses

router = APIRouter(prefix="/orders", tags=["orders"])

REPLAYED_HEADER = "Idempotent-Replayed"


@router.post(
    "",
    status_code=201,
    response_model=OrderRead,
    summary="Place an order",
    responses=error_responses(
        400,
        401,
        409,
        415,
        422,
        503,
        descriptions={
            409: "The Idempotency-Key was used with a different body.",
            422: "Invalid order.",
        },
    ),
)
async def create_order(
    order_in: OrderCreate,
    principal: CurrentUser,
    session: SessionDep,
    outbox: OutboxDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Place an order; it waits for payment as ``pending``. Publishes ``order.created``."""
    placed = await service.create_order(
        session=session,
        outbox=outbox,
        user_id=principal.user_id,
        order_in=order_in,
        idempotency_key=idempotency_key,
    )
    headers = {REPLAYED_HEADER: "true"} if placed.replayed else None
    return Response(
        placed.body,
        status_code=placed.status_code,
        headers=headers,
        media_type="application/json",
    )


@router.get(
    "",
    response_model=OrderPage,
    summary="List my orders",
    responses=error_responses(401, 422, 503, descriptions={422: "Bad query."}),
)
async def list_orders(
    principal: CurrentUser,
    session: SessionDep,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> OrderPage:
    """The caller's own orders, newest first, one page at a time."""
    page = await service.list_orders(
        session=session, user_id=principal.user_id, status=status, limit=limit, cursor=cursor
    )
    return OrderPage(
        items=[OrderRead.model_validate(order) for order in page.orders],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{order_id}",
    response_model=OrderRead,
    summary="Get an order",
    responses=error_responses(401, 404, 422, 503),
)
async def get_order(order_id: uuid.UUID, principal: CurrentUser, session: SessionDep) -> OrderRead:
    """One order of the caller (any order for an admin)."""
    order = await service.get_order(session=session, principal=principal, order_id=order_id)
    return OrderRead.model_validate(order)


@router.post(
    "/{order_id}/cancel",
    response_model=OrderRead,
    summary="Cancel an order",
    responses=error_responses(
        401,
        404,
        409,
        422,
        503,
        descriptions={
            409: "The order's status does not allow cancelling, or it changed meanwhile.",
        },
    ),
)
async def cancel_order(
    order_id: uuid.UUID, principal: CurrentUser, session: SessionDep, outbox: OutboxDep
) -> OrderRead:
    """Cancel a pending order, or have a confirmed one refunded (``refund_pending``)."""
    order = await service.cancel_order(
        session=session, outbox=outbox, principal=principal, order_id=order_id
    )
    return OrderRead.model_validate(order)
