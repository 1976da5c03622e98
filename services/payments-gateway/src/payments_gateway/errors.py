"""The payments-gateway service's expected failures, each with its status code and error code."""

# ruff: noqa: N818  # HTTP errors are named after what went wrong, like servicekit's.

from __future__ import annotations

from servicekit.errors import AppError, BadRequest, Conflict, NotFound


class PaymentNotFound(NotFound):
    """No such payment, or not the caller's."""

    code = "payment_not_found"
    message = "The payment was not found."


class InvalidWebhookSignature(AppError):
    """The webhook's Provider-Signature is missing, malformed or does not match."""

    status_code = 401
    code = "invalid_signature"
    message = "The webhook signature is missing or invalid."


class StaleWebhook(BadRequest):
    """The webhook was signed too long ago (or in the future): a possible replay."""

    code = "webhook_timestamp_out_of_tolerance"
    message = "The webhook timestamp is outside the accepted window."


class MalformedWebhook(BadRequest):
    """The webhook body is not the provider's event shape."""

    code = "malformed_webhook"
    message = "The webhook body is not a valid provider event."


class WebhookReplayed(Conflict):
    """The webhook event id was applied before."""

    code = "webhook_replayed"
    message = "This webhook event was already processed."


class WebhookMismatch(Conflict):
    """The webhook names a charge or amount other than the payment's."""

    code = "webhook_mismatch"
    message = "The webhook does not match the payment's charge."


class PaymentNotSettled(Exception):
    """A refund was requested for a payment that has not been settled in time."""
