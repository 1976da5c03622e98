"""The migrations build the schema the models describe, keep the rows, and undo cleanly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from auth_service.cli import MIGRATIONS
from auth_service.models import Base
from servicekit.testing.migrations import MigrationsContract

USER_ID = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
FAMILY_ID = uuid.UUID("00000000-0000-4000-8000-0000000000c2")
AT = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


# Written at each revision, before the later ones run; all still there at the head.
ROWS = {
    "0002": {
        "credentials": [
            {
                "id": USER_ID,
                "email": "ada@example.com",
                "name": "Ada",
                "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
                "roles": ["user"],
                "created_at": AT,
                "updated_at": AT,
            }
        ],
        "refresh_families": [
            {
                "id": FAMILY_ID,
                "user_id": USER_ID,
                "created_at": AT,
                "expires_at": AT + timedelta(days=30),
                "last_used_at": AT,
            }
        ],
        "refresh_tokens": [
            {
                "id": uuid.uuid4(),
                "family_id": FAMILY_ID,
                "token_hash": bytes(32),
                "created_at": AT,
                "expires_at": AT + timedelta(days=30),
                "access_jti": "jti-1",
                "access_expires_at": AT + timedelta(minutes=15),
            }
        ],
    }
}


class TestMigrations(MigrationsContract):
    script_location = MIGRATIONS
    metadata = Base.metadata
    rows = ROWS
