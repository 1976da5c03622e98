"""The HTTP contract of the auth service."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from servicekit.events import UtcDatetime


def normalise_email(value: str) -> str:
    """Trim and lower-case an email address."""
    return value.strip().lower()


def _valid_email(value: str) -> str:
    email = normalise_email(value)
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return email


# PostgreSQL text cannot hold NUL: text that is stored or looked up refuses it up front (422).
NO_NUL = r"^[^\x00]*$"

# Bounds only; the password policy (12-128 characters...) answers with its own clear message.
Password = Annotated[str, Field(min_length=1, max_length=1024)]
NewEmail = Annotated[str, Field(max_length=320), AfterValidator(_valid_email)]
LoginEmail = Annotated[
    str, Field(min_length=1, max_length=320, pattern=NO_NUL), AfterValidator(normalise_email)
]
OpaqueToken = Annotated[str, Field(min_length=1, max_length=512)]


class RegisterRequest(BaseModel):
    """A new account."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"email": "ada@example.com", "password": "analytical-engine-1843", "name": "Ada"}
            ]
        }
    )

    email: NewEmail
    password: Password = Field(
        description="12 to 128 characters; not your email or name; not a common password."
    )
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]


class UserRead(BaseModel):
    """A registered account."""

    id: uuid.UUID
    email: str
    name: str
    created_at: UtcDatetime


class LoginRequest(BaseModel):
    """Email and password."""

    email: LoginEmail
    password: Password


class RefreshRequest(BaseModel):
    """A refresh token to exchange (it is used up) or to revoke."""

    refresh_token: OpaqueToken


class TokenResponse(BaseModel):
    """A token pair (RFC 6749 §5.1)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str


class SessionRead(BaseModel):
    """One signed-in session (a refresh-token family)."""

    id: uuid.UUID
    created_at: UtcDatetime
    last_used_at: UtcDatetime
    expires_at: UtcDatetime = Field(description="When the session ends at the latest.")
    user_agent: str | None
    current: bool = Field(description="True for the session of the access token used here.")


class SessionPage(BaseModel):
    """A page of sessions, newest first."""

    items: list[SessionRead]
    next_cursor: str | None


class Jwks(BaseModel):
    """The public signing keys (RFC 7517)."""

    keys: list[dict[str, str]]
