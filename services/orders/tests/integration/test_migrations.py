"""The migrations build the schema the models describe, keep the rows, and undo cleanly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from orders_service.cli import MIGRATIONS
from orders_service.models import Base
from servicekit.testing.migrations import MigrationsContract

ORDER_ID = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
USER_ID = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
AT = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


# Written at each revision, before the later ones run; all still there at the head.
ROWS = {
    "0002": {
        "orders": [
            {
                "id": ORDER_ID,
                "user_id": USER_ID,
                "status": "confirmed",
                "currency": "EUR",
                "total_amount": Decimal("25.50"),
                "version": 2,
                "created_at": AT,
                "updated_at": AT,
            }
        ],
        "order_items": [
            {
                "id": uuid.uuid4(),
                "order_id": ORDER_ID,
                "position": 0,
                "sku": "SKU-1",
                "quantity": 3,
                "unit_price": Decimal("8.50"),
            }
        ],
        "idempotency_keys": [
            {
                "user_id": USER_ID,
                "key": "k-1",
                "request_hash": "0" * 64,
                "order_id": ORDER_ID,
                "response_status": 201,
                "created_at": AT,
            }
        ],
    }
}


class TestMigrations(MigrationsContract):
    script_location = MIGRATIONS
    metadata = Base.metadata
    rows = ROWS
