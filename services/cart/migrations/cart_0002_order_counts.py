"""Orders per customer, kept with every order placed: a customer's ListOrders answers its
total_size from one row instead of counting every order (flat cost however many there are).
The order indexes follow the listing's whole sort key (newest first, then id descending, the
tiebreak's direction), so a page is read straight off the index with no sort.

Revision ID: cart_0002
Revises: cart_0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cart_0002"
down_revision: str | Sequence[str] | None = "cart_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_counts",
        sa.Column("customer", sa.Text, primary_key=True),
        sa.Column("orders", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO order_counts (customer, orders) SELECT customer, count(*) FROM orders GROUP BY customer"
    )
    op.drop_index("orders_customer_created", table_name="orders")
    op.drop_index("orders_created", table_name="orders")
    op.create_index(
        "orders_customer_created", "orders", ["customer", sa.text("create_time DESC"), sa.text("id DESC")]
    )
    op.create_index("orders_created", "orders", [sa.text("create_time DESC"), sa.text("id DESC")])


def downgrade() -> None:
    op.drop_index("orders_customer_created", table_name="orders")
    op.drop_index("orders_created", table_name="orders")
    op.create_index("orders_customer_created", "orders", ["customer", sa.text("create_time DESC"), "id"])
    op.create_index("orders_created", "orders", [sa.text("create_time DESC"), "id"])
    op.drop_table("order_counts")
