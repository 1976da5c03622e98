"""Keep the causing event's correlation id and trace context on each notification.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("correlation_id", sa.String(200), nullable=True))
    op.add_column("notifications", sa.Column("traceparent", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("notifications", "traceparent")
    op.drop_column("notifications", "correlation_id")
