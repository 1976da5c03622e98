"""Opaque keyset cursors: the (created_at, id) of the last order of a page."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import orjson

from orders_service.errors import InvalidCursor

MAX_CURSOR_LENGTH = 200


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    """The cursor that continues after this order."""
    raw = orjson.dumps({"t": created_at.isoformat(), "id": str(order_id)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The keyset a cursor stands for; raises InvalidCursor for anything we did not issue."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        created_at = datetime.fromisoformat(data["t"])
        order_id = uuid.UUID(data["id"])
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise InvalidCursor() from None
    if created_at.tzinfo is None:
        raise InvalidCursor()
    return created_at, order_id
