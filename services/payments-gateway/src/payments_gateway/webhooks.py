"""The provider's webhook deliveries: signature check and body shape.

``Provider-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw_body}")>``. The
HMAC is recomputed over the exact bytes received and compared in constant time; a ``t`` more
than ``tolerance`` seconds away from now is refused even with a valid signature, so a captured
delivery cannot be replayed later. Within the window, the event id recorded when a delivery is
applied refuses a second one (see ``service.receive_provider_webhook``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from payments_gateway.errors import InvalidWebhookSignature, MalformedWebhook, StaleWebhook

SIGNATURE_HEADER = "Provider-Signature"
SIGNATURE_SCHEME = "v1"

_MAX_HEADER = 2048
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


# PostgreSQL text cannot hold NUL: a body with one is malformed, not a failed lookup.
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]


class WebhookCharge(BaseModel):
    """The charge a webhook reports on."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    charge_id: Text = Field(min_length=1, max_length=255)
    status: Text = Field(max_length=50)
    amount: Decimal | None = None
    currency: Text | None = Field(default=None, max_length=3)
    idempotency_key: Text | None = Field(default=None, max_length=255)
    metadata: dict[str, Text] = Field(default_factory=dict)


class WebhookEvent(BaseModel):
    """A provider event delivered by webhook."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Text = Field(min_length=1, max_length=255)
    type: Text = Field(min_length=1, max_length=100)
    created: int | None = None
    data: WebhookCharge


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Provider-Signature header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={_digest(secret, timestamp, body)}"


def verify_signature(
    *, secret: str, header: str | None, body: bytes, now: float, tolerance: int
) -> int:
    """Check the signature, then its age; returns the signed timestamp."""
    if not header or len(header) > _MAX_HEADER:
        raise InvalidWebhookSignature()
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t" and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif name == SIGNATURE_SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidWebhookSignature()
    expected = _digest(secret, timestamp, body).encode()
    # Every candidate is compared, so the time taken does not say which one came close.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    if not matched:
        raise InvalidWebhookSignature()
    if abs(now - timestamp) > tolerance:
        raise StaleWebhook()
    return timestamp


def parse_event(body: bytes) -> WebhookEvent:
    """The event a (verified) body carries; MalformedWebhook otherwise."""
    try:
        return WebhookEvent.model_validate_json(body)
    except ValidationError:
        raise MalformedWebhook() from None


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
