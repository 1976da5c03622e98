"""Applied webhook ids are deleted after their retention: an index to find the old ones.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_provider_webhook_events_received_at", "provider_webhook_events", ["received_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_provider_webhook_events_received_at", table_name="provider_webhook_events")
