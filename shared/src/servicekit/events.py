"""Event envelope and the v1 schema of every event the services exchange.

Routing key = event type. A breaking change to an event is a new version: add a new model with
``version = 2`` and register it; consumers that only know v1 keep working until they migrate.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)


def _quantize_money(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    if value != value.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN):
        raise ValueError("amount has more than two decimal places")
    return value.quantize(Decimal("0.01"))


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone")
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """Render an aware datetime as RFC 3339 UTC with a ``Z`` suffix."""
    text = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text


Money = Annotated[
    Decimal,
    AfterValidator(_quantize_money),
    PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json"),
]
"""A decimal amount with two places, a string on the wire (``"19.99"``), never a float."""

UtcDatetime = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class EventData(BaseModel):
    """Base of every event payload: immutable, unknown fields ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    version: ClassVar[int] = 1


class EventEnvelope(BaseModel):
    """The one envelope every event travels in."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: uuid.UUID
    type: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=1)
    occurred_at: UtcDatetime
    producer: str = Field(min_length=1, max_length=100)
    correlation_id: str = Field(min_length=1, max_length=200)
    causation_id: uuid.UUID | None = None
    data: dict[str, Any]

    def to_json(self) -> bytes:
        """Serialise for the wire."""
        return orjson.dumps(self.model_dump(mode="json"))

    def payload(self) -> EventData:
        """Parse ``data`` with the registered model for this type and version."""
        model = registry.model_for(self.type, self.version)
        return model.model_validate(self.data)


class UnknownEventError(LookupError):
    """No model is registered for an event type and version."""


class MalformedEventError(ValueError):
    """A message body is not a valid envelope or its data does not match the schema."""


E = TypeVar("E", bound=type[EventData])


class EventRegistry:
    """Maps (type, version) to the payload model."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[EventData]] = {}

    def register(self, model: E) -> E:
        """Class decorator: register an event payload model."""
        key = (model.event_type, model.version)
        if key in self._models and self._models[key] is not model:
            raise ValueError(f"event {key} registered twice")
        self._models[key] = model
        return model

    def model_for(self, event_type: str, version: int) -> type[EventData]:
        """Return the payload model for an event type and version."""
        try:
            return self._models[(event_type, version)]
        except KeyError:
            raise UnknownEventError(f"unknown event {event_type} v{version}") from None

    def all(self) -> list[type[EventData]]:
        """Every registered model, sorted by type and version."""
        return [self._models[k] for k in sorted(self._models)]


registry = EventRegistry()


# --- the catalogue (v1) ---------------------------------------------------------------------


@registry.register
class UserRegistered(EventData):
    """A user registered with auth."""

    event_type: ClassVar[str] = "user.registered"
    user_id: uuid.UUID
    email: str
    name: str
    roles: list[str] = Field(default_factory=list)
    registered_at: UtcDatetime


@registry.register
class UserUpdated(EventData):
    """A user's profile changed."""

    event_type: ClassVar[str] = "user.updated"
    user_id: uuid.UUID
    email: str
    name: str
    bio: str | None = None
    updated_at: UtcDatetime


@registry.register
class UserDeleted(EventData):
    """A user deleted their account; every service erases or closes what it holds for them."""

    event_type: ClassVar[str] = "user.deleted"
    user_id: uuid.UUID
    deleted_at: UtcDatetime


@registry.register
class SessionRevoked(EventData):
    """An access token (``jti``) must be refused until it expires.

    ``jti`` is null when every token of the user issued before ``revoked_at`` is revoked.
    """

    event_type: ClassVar[str] = "session.revoked"
    jti: str | None
    user_id: uuid.UUID
    expires_at: UtcDatetime
    revoked_at: UtcDatetime | None = None


class OrderItemData(BaseModel):
    """One line of an order as events carry it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sku: str
    quantity: int
    unit_price: Money


@registry.register
class OrderCreated(EventData):
    """An order was placed and waits for payment."""

    event_type: ClassVar[str] = "order.created"
    order_id: uuid.UUID
    user_id: uuid.UUID
    items: list[OrderItemData]
    total_amount: Money
    currency: CurrencyCode
    payment_token: str


@registry.register
class OrderConfirmed(EventData):
    """An order was paid."""

    event_type: ClassVar[str] = "order.confirmed"
    order_id: uuid.UUID
    user_id: uuid.UUID
    total_amount: Money
    currency: CurrencyCode
    payment_id: uuid.UUID | None = None


@registry.register
class OrderFailed(EventData):
    """An order could not be paid."""

    event_type: ClassVar[str] = "order.failed"
    order_id: uuid.UUID
    user_id: uuid.UUID
    total_amount: Money
    currency: CurrencyCode
    reason: str


@registry.register
class OrderCancelled(EventData):
    """A pending order was cancelled."""

    event_type: ClassVar[str] = "order.cancelled"
    order_id: uuid.UUID
    user_id: uuid.UUID
    total_amount: Money
    currency: CurrencyCode
    reason: str = "cancelled_by_user"


@registry.register
class OrderRefundRequested(EventData):
    """The money taken for an order must be given back."""

    event_type: ClassVar[str] = "order.refund_requested"
    order_id: uuid.UUID
    user_id: uuid.UUID
    payment_id: uuid.UUID | None = None
    amount: Money
    currency: CurrencyCode
    reason: str


@registry.register
class PaymentSucceeded(EventData):
    """The provider charged an order."""

    event_type: ClassVar[str] = "payment.succeeded"
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Money
    currency: CurrencyCode
    provider_reference: str


@registry.register
class PaymentFailed(EventData):
    """An order's payment failed for good."""

    event_type: ClassVar[str] = "payment.failed"
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Money
    currency: CurrencyCode
    reason: Literal["declined", "provider_unavailable"]


@registry.register
class PaymentRefunded(EventData):
    """The provider refunded an order's payment."""

    event_type: ClassVar[str] = "payment.refunded"
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Money
    currency: CurrencyCode
    provider_reference: str


# --- building and parsing envelopes ---------------------------------------------------------

current_event: ContextVar[EventEnvelope | None] = ContextVar("current_event", default=None)
"""The event whose handler is running, so events it causes carry its id as ``causation_id``."""


def new_envelope(
    data: EventData,
    *,
    producer: str,
    correlation_id: str | None = None,
    causation_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> EventEnvelope:
    """Wrap a payload in an envelope; correlation and causation default to the running context."""
    cause = current_event.get()
    if correlation_id is None:
        correlation_id = _context_correlation_id() or (cause.correlation_id if cause else None)
    event_id = uuid.uuid4()
    return EventEnvelope(
        id=event_id,
        type=data.event_type,
        version=data.version,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
        correlation_id=correlation_id or str(event_id),
        causation_id=causation_id if causation_id is not None else (cause.id if cause else None),
        data=data.model_dump(mode="json"),
    )


def parse_envelope(body: bytes) -> tuple[EventEnvelope, EventData]:
    """Parse a message body into its envelope and typed payload.

    Raises MalformedEventError for bodies that can never be processed, UnknownEventError for
    types this process has no schema for.
    """
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEventError(f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedEventError("body is not a JSON object")
    try:
        envelope = EventEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise MalformedEventError(f"invalid envelope: {_short(exc)}") from None
    try:
        data = envelope.payload()
    except ValidationError as exc:
        raise MalformedEventError(f"invalid {envelope.type} data: {_short(exc)}") from None
    return envelope, data


def _short(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]]
    return "; ".join(parts)


def _context_correlation_id() -> str | None:
    import structlog

    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(value) if value else None
