"""Keyset cursors: opaque to clients, strict when read back."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from users_service.errors import InvalidCursor
from users_service.pagination import Position, decode_cursor, encode_cursor


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TestCursor:
    def test_round_trips_microseconds_and_id(self) -> None:
        position = Position(datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC), uuid.uuid4())

        cursor = encode_cursor(position)

        assert decode_cursor(cursor) == position
        assert cursor.replace("-", "").replace("_", "").isalnum()  # safe in a query string

    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "!!!",
            "é",
            b64(b"not json"),
            b64(b"[]"),
            b64(b"42"),
            b64(b'{"t": "2026-11-26T10:00:00+00:00"}'),
            b64(b'{"t": "2026-11-26T10:00:00", "id": "6f1c1d7e-3a52-4a8e-9d63-0c5b9c1d2e3f"}'),
            b64(b'{"t": "tomorrow", "id": "6f1c1d7e-3a52-4a8e-9d63-0c5b9c1d2e3f"}'),
            b64(b'{"t": "2026-11-26T10:00:00+00:00", "id": 7}'),
            b64(b'{"t": 1, "id": "6f1c1d7e-3a52-4a8e-9d63-0c5b9c1d2e3f"}'),
            "A" * 201,
        ],
    )
    def test_anything_else_is_invalid(self, cursor: str) -> None:
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor)
