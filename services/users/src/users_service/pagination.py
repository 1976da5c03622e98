"""Opaque keyset cursors: url-safe base64 of the last row's (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

import orjson

from users_service.errors import InvalidCursor

MAX_CURSOR_LENGTH = 200


@dataclass(frozen=True)
class Position:
    """Where a page ended: rows strictly older than this come next."""

    created_at: datetime
    id: uuid.UUID


def encode_cursor(position: Position) -> str:
    """The opaque cursor for a position."""
    raw = orjson.dumps({"t": position.created_at.isoformat(), "id": str(position.id)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """Parse a cursor from a client; InvalidCursor (422) for anything else."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        created_at = datetime.fromisoformat(data["t"])
        position = Position(created_at=created_at, id=uuid.UUID(data["id"]))
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError):
        raise InvalidCursor() from None
    if position.created_at.tzinfo is None:
        raise InvalidCursor()
    return position
