"""The HTTP contract of the notifications service."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from notifications_service.models import DeliveryStatus
from servicekit.events import UtcDatetime


class NotificationRead(BaseModel):
    """One email notification sent (or to be sent) to the caller."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    template: str
    channel: Literal["email"]
    recipient: str
    subject: str
    status: Literal["pending", "sent", "failed"]
    attempts: int
    created_at: UtcDatetime
    sent_at: UtcDatetime | None

    @field_validator("status", mode="before")
    @classmethod
    def _sending_is_pending(cls, value: object) -> object:
        # `sending` is the dispatcher's bookkeeping; to the user the email is still on its way.
        return DeliveryStatus.PENDING.value if value == DeliveryStatus.SENDING.value else value


class NotificationPage(BaseModel):
    """A page of notifications, newest first."""

    items: list[NotificationRead]
    next_cursor: str | None
