"""The notifications service's expected failures."""

from __future__ import annotations

import uuid

from servicekit.errors import NotFound


class NotificationNotFound(NotFound):
    """404: no such notification, or not the caller's."""

    code = "notification_not_found"
    message = "The notification was not found."


class RecipientUnknown(Exception):  # noqa: N818 - a condition to wait out, not a bug
    """The user's projection has not arrived yet, so there is no address to mail."""

    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(f"no contact for user {user_id} yet")
        self.user_id = user_id
