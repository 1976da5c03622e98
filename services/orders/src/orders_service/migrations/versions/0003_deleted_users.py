"""Deleted users, so an order placed with a token still valid after the deletion is refused.

Revision ID: 0003_deleted_users
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_deleted_users"
down_revision: str | None = "0002"
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
