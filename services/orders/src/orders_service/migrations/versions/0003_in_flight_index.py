"""An index for the sweeper of orders still in flight (pending, refund_pending).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_orders_in_flight_updated_at ON orders (updated_at) "
        "WHERE status IN ('pending', 'refund_pending')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_orders_in_flight_updated_at")
