"""Keyset cursors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from payments_gateway.errors import InvalidCursor
from payments_gateway.pagination import decode_cursor, encode_cursor


class TestCursor:
    def test_a_cursor_names_the_position_it_was_made_from(self) -> None:
        created_at = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
        item_id = uuid.uuid4()

        assert decode_cursor(encode_cursor(created_at, item_id)) == (created_at, item_id)

    @pytest.mark.parametrize(
        "cursor",
        ["", "!!!", "bm90IGEgY3Vyc29y", "MjAyNi0xMS0yNlQxMDowMDowMHxub3QtYS11dWlk", "ü"],
    )
    def test_a_foreign_cursor_is_refused(self, cursor: str) -> None:
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor)
