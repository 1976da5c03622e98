"""The HTTP contract of the payments-gateway service."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict

from servicekit.events import CurrencyCode, Money, UtcDatetime


class PaymentRead(BaseModel):
    """A payment as clients see it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    order_id: uuid.UUID
    status: Literal["pending", "succeeded", "failed", "refunded"]
    amount: Money
    currency: CurrencyCode
    reason: Literal["declined", "provider_unavailable"] | None
    provider_reference: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class PaymentPage(BaseModel):
    """One page of payments, newest first."""

    items: list[PaymentRead]
    next_cursor: str | None


class WebhookReceipt(BaseModel):
    """The answer to an accepted webhook delivery."""

    event_id: str
    result: Literal["applied", "ignored"]
