"""The PATCH body: only name and bio, each within its limits."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from users_service.schemas import UserUpdate


class TestUserUpdate:
    def test_only_the_fields_sent_count_as_changes(self) -> None:
        assert UserUpdate.model_validate({"bio": None}).model_dump(exclude_unset=True) == {
            "bio": None
        }
        assert UserUpdate.model_validate({}).model_dump(exclude_unset=True) == {}

    def test_the_name_is_trimmed(self) -> None:
        assert UserUpdate.model_validate({"name": "  Ada  "}).name == "Ada"

    @pytest.mark.parametrize(
        "body",
        [
            {"id": "x"},
            {"email": "x@example.com"},
            {"roles": ["admin"]},
            {"name": None},
            {"name": ""},
            {"name": " "},
            {"name": "x" * 101},
            {"bio": "x" * 1001},
        ],
    )
    def test_rejects(self, body: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            UserUpdate.model_validate(body)

    def test_accepts_the_limits(self) -> None:
        body = UserUpdate.model_validate({"name": "x" * 100, "bio": "y" * 1000})

        assert (len(body.name or ""), len(body.bio or "")) == (100, 1000)
