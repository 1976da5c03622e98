"""The auth service's expected failures, each with its status code and error code."""

from __future__ import annotations

from servicekit.errors import (
    BadRequest,
    Conflict,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
)


class EmailAlreadyRegistered(Conflict):
    """409: the email belongs to an account already."""

    code = "email_already_registered"
    message = "An account with this email address already exists."


class WeakPassword(UnprocessableEntity):
    """422: the password breaks the password policy (the message says which rule)."""

    code = "weak_password"
    message = "The password is not acceptable."


class InvalidCredentials(Unauthorized):
    """401: the same answer for an unknown email and a wrong password."""

    code = "invalid_credentials"
    message = "The email address or password is incorrect."


class LoginThrottled(TooManyRequests):
    """429: too many failed logins for this email or from this address."""

    code = "too_many_login_attempts"
    message = "Too many failed login attempts; try again later."


class HashingBusy(ServiceUnavailable):
    """503: every password hashing slot stayed busy for too long."""

    code = "busy"
    message = "The service is busy; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class InvalidRefreshToken(Unauthorized):
    """401: unknown, expired, used or revoked refresh token (OAuth ``invalid_grant``)."""

    code = "invalid_grant"
    message = "The refresh token is invalid or expired."
    bearer_error = "invalid_token"


class RefreshTokenReused(InvalidRefreshToken):
    """401: a refresh token came back after it was used; its whole family is now revoked."""

    # The revocation is the point of the error: the request's transaction commits it.
    keep_changes = True


class InvalidRequest(BadRequest):
    """400: RFC 6749 ``invalid_request`` (a parameter is missing or in the wrong place)."""

    code = "invalid_request"
    message = "The request is missing a required parameter or is malformed."


class UnsupportedGrantType(BadRequest):
    """400: RFC 6749 ``unsupported_grant_type``."""

    code = "unsupported_grant_type"
    message = "grant_type must be 'password' or 'refresh_token'."


class InvalidGrant(Unauthorized):
    """401: RFC 6749 ``invalid_grant`` at the token endpoint (bad username or password)."""

    code = "invalid_grant"
    message = "The email address or password is incorrect."


class CredentialsInQuery(BadRequest):
    """400: secrets in the URL end up in logs and browser history; refused outright."""

    code = "credentials_in_query"
    message = "Credentials must be sent in the request body, never in the URL."


class SessionNotFound(NotFound):
    """404: no such session of the caller."""

    code = "session_not_found"
    message = "The session was not found."
