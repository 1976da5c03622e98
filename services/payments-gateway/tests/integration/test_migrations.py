"""The migrations build the schema the models describe, keep the rows, and undo cleanly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from payments_gateway.cli import MIGRATIONS
from payments_gateway.models import Base
from servicekit.testing.migrations import MigrationsContract

PAYMENT_ID = uuid.UUID("00000000-0000-4000-8000-0000000000f1")
AT = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


# Written at each revision, before the later ones run; all still there at the head.
ROWS = {
    "0002": {
        "payments": [
            {
                "id": PAYMENT_ID,
                "order_id": uuid.uuid4(),
                "user_id": uuid.uuid4(),
                "amount": Decimal("25.50"),
                "currency": "EUR",
                "status": "pending",
                "created_at": AT,
                "updated_at": AT,
            }
        ],
        "provider_webhook_events": [
            {
                "id": "evt_1",
                "event_type": "payment.succeeded",
                "payment_id": PAYMENT_ID,
                "received_at": AT,
            }
        ],
    }
}


class TestMigrations(MigrationsContract):
    script_location = MIGRATIONS
    metadata = Base.metadata
    rows = ROWS
