"""Check constraints take the names the models give them.

0002 passed full names where the naming convention expected short ones, so the convention
prefixed them a second time (``ck_payments_ck_payments_status_known``).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, name in the database, name in the models)
RENAMED = [
    ("payments", "ck_payments_ck_payments_status_known", "ck_payments_status_known"),
    ("payments", "ck_payments_ck_payments_amount_positive", "ck_payments_amount_positive"),
]


def upgrade() -> None:
    for table, old, new in RENAMED:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")


def downgrade() -> None:
    for table, old, new in RENAMED:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {new} TO {old}")
