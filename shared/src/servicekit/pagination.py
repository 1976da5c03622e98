"""Opaque keyset cursors: the (created_at, id) of the last row of a page, newest first.

A cursor is url-safe base64 of a small JSON object. Clients must treat it as opaque; anything
this code did not issue (garbage, a forged body, a naive time, an oversized value) is refused
with ``InvalidCursor``, a 422, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import orjson

from servicekit.errors import UnprocessableEntity

MAX_CURSOR_LENGTH = 200


class InvalidCursor(UnprocessableEntity):
    """422: a list cursor this service did not issue."""

    code = "invalid_cursor"
    message = "The cursor is malformed."


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """The cursor that continues after this row."""
    raw = orjson.dumps({"t": created_at.isoformat(), "id": str(row_id)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The keyset a cursor stands for; InvalidCursor for anything this code did not issue."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        created_at = datetime.fromisoformat(data["t"])
        row_id = uuid.UUID(data["id"])
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError):
        raise InvalidCursor() from None
    if created_at.tzinfo is None:
        raise InvalidCursor()
    return created_at, row_id
