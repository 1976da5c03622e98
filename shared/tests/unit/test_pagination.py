"""Cursors: opaque, round-trip exactly, and anything forged is a 422."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from servicekit.pagination import InvalidCursor, decode_cursor, encode_cursor


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TestCursor:
    def test_a_cursor_round_trips_to_the_microsecond(self) -> None:
        created_at = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
        row_id = uuid.uuid4()

        assert decode_cursor(encode_cursor(created_at, row_id)) == (created_at, row_id)

    def test_a_cursor_is_url_safe(self) -> None:
        cursor = encode_cursor(datetime.now(UTC), uuid.uuid4())

        assert cursor.replace("-", "").replace("_", "").isalnum()

    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "not a cursor",
            "!!!!",
            "A" * 300,
            b64(b"not json"),
            b64(b"[1, 2]"),
            b64(b'"text"'),
            b64(b'{"t": 1}'),
            b64(b'{"t": "2026-01-01T00:00:00+00:00"}'),
            b64(b'{"t": "yesterday", "id": "00000000-0000-0000-0000-000000000000"}'),
            b64(b'{"t": "2026-01-01T00:00:00+00:00", "id": "nope"}'),
            b64(b'{"t": "2026-01-01T00:00:00", "id": "00000000-0000-0000-0000-000000000000"}'),
            "é",
            "ü",
            "A" * 201,
            b64(b"[]"),
            b64(b"42"),
            b64(b'{"t": "2026-11-26T10:00:00+00:00", "id": 7}'),
            b64(b'["2026-11-26T10:00:00+00:00", "6f1c1d7e-3a52-4a8e-9d63-0c5b9c1d2e3f"]'),
            b64(b"2026-11-26T10:00:00+00:00|6f1c1d7e-3a52-4a8e-9d63-0c5b9c1d2e3f"),
        ],
    )
    def test_malformed_cursors_are_refused(self, cursor: str) -> None:
        with pytest.raises(InvalidCursor) as raised:
            decode_cursor(cursor)

        assert raised.value.status_code == 422
