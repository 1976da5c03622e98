"""Inbox rows are deleted after their retention: an index to find the old ones.

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
    op.execute("CREATE INDEX ix_inbox_received_at ON inbox (received_at)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_inbox_received_at")
