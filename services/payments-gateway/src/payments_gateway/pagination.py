"""Opaque keyset cursors: the (created_at, id) of the last item of a page."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from payments_gateway.errors import InvalidCursor

_SEPARATOR = "|"


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    """The cursor that continues after an item."""
    raw = f"{created_at.isoformat()}{_SEPARATOR}{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; InvalidCursor when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
        stamp, _, item = raw.partition(_SEPARATOR)
        created_at = datetime.fromisoformat(stamp)
        item_id = uuid.UUID(item)
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidCursor() from None
    if created_at.tzinfo is None:
        raise InvalidCursor()
    return created_at, item_id
