"""Deleted users, so an order placed with a token still valid after the deletion is refused.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE deleted_users (
            user_id UUID NOT NULL,
            deleted_at TIMESTAMP WITH TIME ZONE NOT NULL,
            CONSTRAINT pk_deleted_users PRIMARY KEY (user_id)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE deleted_users")
