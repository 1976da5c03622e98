"""HTTP routes of the payments-gateway service."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from payments_gateway import service
from payments_gateway.dependencies import PrincipalDep, ResourcesDep, SessionDep
from payments_gateway.schemas import PaymentPage, PaymentRead, WebhookReceipt
from payments_gateway.webhooks import SIGNATURE_HEADER
from servicekit.errors import error_responses

router = APIRouter(prefix="/payments", tags=["payments"])

_BAD_QUERY = {422: "Invalid input or cursor."}


@router.get("", responses=error_responses(401, 422, 503, descriptions=_BAD_QUERY))
async def list_payments(
    session: SessionDep,
    principal: PrincipalDep,
    order_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PaymentPage:
    """The caller's payments (an admin's: everyone's), newest first, optionally of one order."""
    items, next_cursor = await service.list_payments(
        session=session, principal=principal, order_id=order_id, limit=limit, cursor=cursor
    )
    return PaymentPage(
        items=[PaymentRead.model_validate(p) for p in items], next_cursor=next_cursor
    )


@router.get("/{payment_id}", responses=error_responses(401, 404, 422, 503, descriptions=_BAD_QUERY))
async def get_payment(
    payment_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> PaymentRead:
    """One payment of the caller (any payment for an admin)."""
    payment = await service.get_payment(session=session, principal=principal, payment_id=payment_id)
    return PaymentRead.model_validate(payment)


@router.post(
    "/webhooks/provider",
    responses=error_responses(
        400,
        401,
        404,
        409,
        415,
        422,
        503,
        descriptions={
            400: "Malformed body, or timestamp outside the window.",
            401: "Missing or invalid Provider-Signature.",
            404: "No payment for this charge.",
            409: "Event already processed (replay) or not the payment's charge.",
        },
    ),
)
async def provider_webhook(
    request: Request,
    session: SessionDep,
    resources: ResourcesDep,
    provider_signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
) -> WebhookReceipt:
    """The provider's result for a charge it answered pending; signed, each event applied once."""
    settings = resources.settings
    event, applied = await service.receive_provider_webhook(
        session=session,
        outbox=resources.outbox,
        secret=settings.webhook_secret.get_secret_value(),
        tolerance=settings.webhook_tolerance_seconds,
        signature=provider_signature,
        body=await request.body(),
    )
    return WebhookReceipt(event_id=event.id, result="applied" if applied else "ignored")
