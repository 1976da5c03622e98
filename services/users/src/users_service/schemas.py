"""The HTTP contract of the users service (and the read model the cache stores)."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from servicekit.events import UtcDatetime
from users_service.models import BIO_MAX, NAME_MAX

# PostgreSQL text cannot hold NUL: refused up front (422) rather than failing the write.
NO_NUL = r"^[^\x00]*$"
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX, pattern=NO_NUL),
]
Bio = Annotated[str, StringConstraints(max_length=BIO_MAX, pattern=NO_NUL)]


class UserRead(BaseModel):
    """A user's profile as clients see it; also the value cached in Redis."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: uuid.UUID
    email: str
    name: str
    bio: str | None
    roles: list[str]
    created_at: UtcDatetime
    updated_at: UtcDatetime


class UserUpdate(BaseModel):
    """``PATCH /users/me``: only these fields; anything else (id, email, roles…) is a 422."""

    model_config = ConfigDict(extra="forbid")

    # Optional but not nullable: the schema shows a string, an explicit null is a 422.
    name: Name | SkipJsonSchema[None] = Field(default=None, description="1–100 characters.")
    bio: Bio | None = Field(default=None, description="At most 1000 characters; null clears it.")

    @field_validator("name")
    @classmethod
    def _name_is_not_null(cls, value: str | None) -> str:
        # Runs only for a name that was sent: leaving it out is fine, sending null is not.
        if value is None:
            raise ValueError("name cannot be null")
        return value


class UserPage(BaseModel):
    """One page of ``GET /users``, newest first."""

    items: list[UserRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")
