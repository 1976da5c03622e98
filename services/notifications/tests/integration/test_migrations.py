"""The migrations build the schema the models describe, keep the rows, and undo cleanly."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from notifications_service.cli import MIGRATIONS
from notifications_service.models import Base
from servicekit.testing.migrations import MigrationsContract

USER_ID = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
AT = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


# Written at each revision, before the later ones run; all still there at the head.
ROWS = {
    "0002": {
        "user_contacts": [
            {"user_id": USER_ID, "email": "ada@example.com", "name": "Ada", "as_of": AT}
        ],
        "erased_users": [
            {"user_id": uuid.UUID("00000000-0000-4000-8000-0000000000e2"), "erased_at": AT}
        ],
        # Written before 0003 added the correlation id and trace context.
        "notifications": [
            {
                "id": uuid.uuid4(),
                "user_id": USER_ID,
                "event_id": uuid.uuid4(),
                "event_type": "order.confirmed",
                "template": "order_confirmed",
                "recipient": "ada@example.com",
                "recipient_name": "Ada",
                "subject": "Your order",
                "body_text": "Confirmed.",
                "body_html": "<p>Confirmed.</p>",
                "deliver_by": AT + timedelta(days=1),
            }
        ],
    }
}


class TestMigrations(MigrationsContract):
    script_location = MIGRATIONS
    metadata = Base.metadata
    rows = ROWS

    def check_rows_at_head(self, found: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        (notification,) = found["notifications"]
        assert notification["status"] == "pending"
        assert notification["attempts"] == 0
        assert notification["correlation_id"] is None
        assert notification["traceparent"] is None
