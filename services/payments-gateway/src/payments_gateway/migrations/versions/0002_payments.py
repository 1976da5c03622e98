"""Payments and the provider's applied webhook deliveries.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The check constraints carry the names this revision gave them when it was written, when the
# naming convention prefixed the names passed to it a second time; 0006 renames them.


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("provider_reference", sa.String(255), nullable=True),
        sa.Column("refund_reference", sa.String(255), nullable=True),
        sa.Column("source_token", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        sa.UniqueConstraint("order_id", name="uq_payments_order_id"),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'refunded')",
            name=op.f("ck_payments_ck_payments_status_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_ck_payments_amount_positive")),
    )
    op.create_index("ix_payments_user_created", "payments", ["user_id", "created_at", "id"])
    op.create_index("ix_payments_created", "payments", ["created_at", "id"])
    op.create_table(
        "provider_webhook_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provider_webhook_events"),
    )
    op.create_index(
        "ix_provider_webhook_events_payment_id", "provider_webhook_events", ["payment_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_provider_webhook_events_payment_id", table_name="provider_webhook_events")
    op.drop_table("provider_webhook_events")
    op.drop_index("ix_payments_created", table_name="payments")
    op.drop_index("ix_payments_user_created", table_name="payments")
    op.drop_table("payments")
