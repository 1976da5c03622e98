"""Inbox rows are deleted after their retention: an index to find the old ones.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_inbox_received_at ON inbox (received_at)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_inbox_received_at")
