"""Cart tables: carts (one document per customer), promotions and their usage, orders, and the
journal of checkouts in progress.

Revision ID: cart_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "cart_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("cart",)
depends_on: str | Sequence[str] | None = "runtime_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "carts",
        sa.Column("customer", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("currency", sa.Text, nullable=False, server_default=""),
        sa.Column("lines", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("codes", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("last_channel", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("next_line", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("item_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("create_time", TS),
        sa.Column("update_time", TS),
        sa.Column("abandoned_at", TS),
    )
    # The abandonment sweep looks only at non-empty carts not yet reported, oldest change first.
    op.create_index(
        "carts_idle",
        "carts",
        ["update_time"],
        postgresql_where=sa.text("item_count > 0 AND abandoned_at IS NULL"),
    )
    op.create_table(
        "promotions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("percent_off_bp", sa.Integer),
        sa.Column("amount_off", postgresql.JSONB),
        sa.Column(
            "minimum_subtotals", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column("items", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("start_time", TS),
        sa.Column("end_time", TS),
        sa.Column("usage_limit", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("usage_limit_per_customer", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("usage_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_index("promotions_create_time", "promotions", ["create_time"])
    op.create_table(
        "promotion_usage",
        sa.Column("promotion_id", sa.Text, primary_key=True),
        sa.Column("customer", sa.Text, primary_key=True),
        sa.Column("uses", sa.Integer, nullable=False),
    )
    op.execute("CREATE SEQUENCE order_number_seq")
    op.create_table(
        "orders",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("customer", sa.Text, nullable=False),
        sa.Column("order_number", sa.Text, nullable=False, unique=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False),
        sa.Column("channel_store", sa.Text, nullable=False, server_default=""),
        sa.Column("pickup_stores", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("group_states", postgresql.ARRAY(sa.SmallInteger), nullable=False, server_default="{}"),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
        sa.Column("doc", sa.LargeBinary, nullable=False),
    )
    op.create_index("orders_customer_created", "orders", ["customer", sa.text("create_time DESC"), "id"])
    op.create_index("orders_created", "orders", [sa.text("create_time DESC"), "id"])
    op.create_index("orders_pickup_stores", "orders", ["pickup_stores"], postgresql_using="gin")
    # Checkouts between "about to reserve" and "order committed": a row left behind by a crashed
    # attempt tells the sweeper whose reservations to release.
    op.create_table(
        "checkout_attempts",
        sa.Column("order_name", sa.Text, primary_key=True),
        sa.Column("customer", sa.Text, nullable=False),
        sa.Column("started", TS, nullable=False),
    )
    op.create_index("checkout_attempts_started", "checkout_attempts", ["started"])


def downgrade() -> None:
    op.drop_table("checkout_attempts")
    op.drop_table("orders")
    op.execute("DROP SEQUENCE order_number_seq")
    op.drop_table("promotion_usage")
    op.drop_table("promotions")
    op.drop_table("carts")
