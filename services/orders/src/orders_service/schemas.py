"""The HTTP contract of the orders service."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    computed_field,
    model_validator,
)

from orders_service.domain import OrderStatus
from servicekit.events import Money, UtcDatetime

MAX_ITEMS = 100
MAX_QUANTITY = 1000
# NUMERIC(12, 2) holds up to ten integer digits.
MAX_TOTAL = Decimal("9999999999.99")

# ISO-4217 codes we accept, with their minor units (JPY and KRW have none).
CURRENCY_MINOR_UNITS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "NZD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "HUF": 2,
    "CNY": 2,
    "HKD": 2,
    "SGD": 2,
    "INR": 2,
    "BRL": 2,
    "MXN": 2,
    "ZAR": 2,
    "JPY": 0,
    "KRW": 0,
}

# At most eight integer digits and two decimals: ten digits, no sign, no exponent.
_PRICE = re.compile(r"(?:0|[1-9]\d{0,7})(?:\.\d{1,2})?")


def _parse_price(value: Any) -> Decimal:
    """Turn a JSON string or number into an exact Decimal, refusing what is not a plain price."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError('unit_price must be a decimal string such as "10.50"')
    # str() of a float is its shortest round-trip form: 0.1 gives "0.1", not 0.1000000000000000055.
    text = value if isinstance(value, str) else str(value)
    if not _PRICE.fullmatch(text):
        raise ValueError(
            "unit_price must be a positive amount with at most 2 decimal places and 10 digits"
        )
    price = Decimal(text)
    if price <= 0:
        raise ValueError("unit_price must be greater than 0")
    return price.quantize(Decimal("0.01"))


def _parse_currency(value: Any) -> str:
    if not isinstance(value, str) or value not in CURRENCY_MINOR_UNITS:
        raise ValueError(
            "currency must be an upper-case ISO-4217 code we accept: "
            + ", ".join(sorted(CURRENCY_MINOR_UNITS))
        )
    return value


Price = Annotated[Decimal, BeforeValidator(_parse_price), Money]
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Currency = Annotated[str, BeforeValidator(_parse_currency)]
# Visible ASCII only: tokens and keys are opaque identifiers, never free text.
PaymentToken = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]


class OrderItemCreate(BaseModel):
    """One line of a new order."""

    model_config = ConfigDict(extra="forbid")

    sku: Sku
    quantity: int = Field(strict=True, ge=1, le=MAX_QUANTITY)
    unit_price: Price


class OrderCreate(BaseModel):
    """The body of ``POST /orders``; the server computes the total and owns every other field."""

    model_config = ConfigDict(extra="forbid")

    items: list[OrderItemCreate] = Field(min_length=1, max_length=MAX_ITEMS)
    currency: Currency
    payment_token: PaymentToken

    @model_validator(mode="after")
    def _fits_the_currency_and_the_ledger(self) -> OrderCreate:
        if CURRENCY_MINOR_UNITS[self.currency] == 0:
            for item in self.items:
                if item.unit_price != item.unit_price.to_integral_value():
                    raise ValueError(f"{self.currency} amounts have no decimal places")
        if self.total_amount() > MAX_TOTAL:
            raise ValueError(f"the order total may not exceed {MAX_TOTAL}")
        return self

    def total_amount(self) -> Decimal:
        """The exact total of every line."""
        return sum((item.unit_price * item.quantity for item in self.items), Decimal("0.00"))


class OrderItemRead(BaseModel):
    """One line of an order as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    sku: str
    quantity: int
    unit_price: Money

    @computed_field  # type: ignore[prop-decorator]
    @property
    def line_total(self) -> Money:
        """Quantity times unit price."""
        return self.unit_price * self.quantity


class OrderRead(BaseModel):
    """An order as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: OrderStatus
    items: list[OrderItemRead]
    total_amount: Money
    currency: str
    payment_id: uuid.UUID | None = None
    status_reason: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class OrderPage(BaseModel):
    """One page of the caller's orders, newest first."""

    items: list[OrderRead]
    next_cursor: str | None
