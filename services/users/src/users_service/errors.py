"""The users service's expected failures."""

from __future__ import annotations

from servicekit.errors import Forbidden, NotFound


class ProfileNotFound(NotFound):
    """The caller has no profile (not created yet, or deleted)."""

    code = "profile_not_found"
    message = "No profile exists for this user."


class UserNotFound(NotFound):
    """Unknown user, or one the caller may not see (the answer is the same)."""

    code = "user_not_found"
    message = "The user was not found."


class AdminOnly(Forbidden):
    """Only administrators may list users."""

    code = "admin_only"
    message = "Only administrators may do this."
