"""Check constraints take the names the models give them.

0002 passed full names where the naming convention expected short ones, so the convention
prefixed them a second time (``ck_orders_ck_orders_status``).

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, name in the database, name in the models)
RENAMED = [
    ("orders", "ck_orders_ck_orders_status", "ck_orders_status"),
    ("orders", "ck_orders_ck_orders_total_positive", "ck_orders_total_positive"),
    (
        "order_items",
        "ck_order_items_ck_order_items_quantity_range",
        "ck_order_items_quantity_range",
    ),
    (
        "order_items",
        "ck_order_items_ck_order_items_unit_price_positive",
        "ck_order_items_unit_price_positive",
    ),
]


def upgrade() -> None:
    for table, old, new in RENAMED:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")


def downgrade() -> None:
    for table, old, new in RENAMED:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {new} TO {old}")
