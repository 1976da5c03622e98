"""The migrations build the schema the models describe, keep the rows, and undo cleanly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from servicekit.testing.migrations import MigrationsContract
from users_service.cli import MIGRATIONS
from users_service.models import Base

AT = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


# Written at each revision, before the later ones run; all still there at the head.
ROWS = {
    "0002": {
        "users": [
            {
                "id": uuid.UUID("00000000-0000-4000-8000-0000000000d1"),
                "email": "ada@example.com",
                "name": "Ada",
                "bio": "Counts things.",
                "roles": ["user"],
                "created_at": AT,
                "updated_at": AT,
            }
        ],
        "deleted_users": [
            {"id": uuid.UUID("00000000-0000-4000-8000-0000000000d2"), "deleted_at": AT}
        ],
    }
}


class TestMigrations(MigrationsContract):
    script_location = MIGRATIONS
    metadata = Base.metadata
    rows = ROWS
