"""The orders service's expected failures, each carrying its status code and error code."""

# ruff: noqa: N818  # named after what went wrong, like the shared HTTP errors they extend

from __future__ import annotations

from servicekit.errors import Conflict, NotFound, Unauthorized


class OrderNotFound(NotFound):
    """404: no such order, or not the caller's."""

    code = "order_not_found"
    message = "The order was not found."


class InvalidStateTransition(Conflict):
    """409: the order's status does not allow this change."""

    code = "invalid_state_transition"
    message = "The order cannot make this change in its current status."


class OrderConcurrentlyModified(Conflict):
    """409: someone else changed the order between our read and our write."""

    code = "concurrent_modification"
    message = "The order was changed by another request; read it again and retry."


class IdempotencyKeyReused(Conflict):
    """409: an Idempotency-Key was already used with a different request body."""

    code = "idempotency_key_reused"
    message = "This Idempotency-Key was already used with a different request."


class AccountDeleted(Unauthorized):
    """401: the caller's account was deleted; its tokens are being revoked everywhere."""

    code = "account_deleted"
    message = "The account of this token was deleted."
    bearer_error = "invalid_token"


class OrderNotYetKnown(LookupError):
    """An event refers to an order this service has not stored (yet); the consumer retries."""
