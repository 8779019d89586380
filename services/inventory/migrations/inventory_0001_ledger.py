"""Inventory: catalogue, locations, stock ledger (levels + append-only movements), reservations,
back-in-stock subscriptions.

Revision ID: inventory_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "inventory_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("inventory",)
depends_on: str | Sequence[str] | None = "runtime_0001"

TS = sa.DateTime(timezone=True)
ACTIVE = 1  # RESERVATION_STATE_ACTIVE and STOCK_SUBSCRIPTION_STATE_ACTIVE


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("sku", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("attributes", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("prices", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_table(
        "locations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("address", postgresql.JSONB),
        sa.Column("latitude", sa.Double),
        sa.Column("longitude", sa.Double),
        sa.Column("opening_hours", postgresql.JSONB),
        sa.Column("ship_from", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("pickup_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("allocation_priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_index("locations_latitude", "locations", ["latitude"])
    op.create_table(
        "stock_levels",
        sa.Column("location_id", sa.Text, sa.ForeignKey("locations.id"), primary_key=True),
        sa.Column("item_sku", sa.Text, sa.ForeignKey("items.sku"), primary_key=True),
        sa.Column("on_hand", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reserved", sa.Integer, nullable=False, server_default="0"),
        sa.Column("safety_stock", sa.Integer, nullable=False, server_default="0"),
        sa.Column("low_stock_threshold", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("update_time", TS, nullable=False),
        # on_hand has no lower bound: a till sale is never refused, so a level can be oversold.
        sa.CheckConstraint("reserved >= 0", name="stock_levels_reserved_not_negative"),
        sa.CheckConstraint("safety_stock >= 0", name="stock_levels_safety_not_negative"),
        sa.CheckConstraint("low_stock_threshold >= 0", name="stock_levels_threshold_not_negative"),
    )
    op.create_index("stock_levels_item", "stock_levels", ["item_sku", "location_id"])
    op.create_table(
        "stock_movements",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("location_id", sa.Text, nullable=False),
        sa.Column("item_sku", sa.Text, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("on_hand_delta", sa.Integer, nullable=False),
        sa.Column("reserved_delta", sa.Integer, nullable=False),
        sa.Column("on_hand_after", sa.Integer, nullable=False),
        sa.Column("reserved_after", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("request_id", sa.Text, nullable=False, server_default=""),
        sa.Column("reservation_id", sa.Text),
        sa.Column("reference", sa.Text, nullable=False, server_default=""),
        sa.Column("channel", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("channel_store", sa.Text, nullable=False, server_default=""),
        sa.Column("channel_device", sa.Text, nullable=False, server_default=""),
        sa.Column("actor", sa.Text, nullable=False, server_default=""),
        sa.Column("create_time", TS, nullable=False),
    )
    op.create_index("stock_movements_level", "stock_movements", ["location_id", "item_sku", "seq"])
    op.create_index("stock_movements_item", "stock_movements", ["item_sku", "seq"])
    op.create_index("stock_movements_time", "stock_movements", ["create_time", "seq"])
    op.create_index("stock_movements_reservation", "stock_movements", ["reservation_id"])
    # The ledger's history cannot be rewritten: no UPDATE or DELETE, whoever tries.
    op.execute(
        """
        CREATE FUNCTION stock_movements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'stock_movements is append-only (% refused)', TG_OP
                USING ERRCODE = 'restrict_violation';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER stock_movements_append_only
        BEFORE UPDATE OR DELETE ON stock_movements
        FOR EACH ROW EXECUTE FUNCTION stock_movements_append_only()
        """
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("strategy", sa.SmallInteger, nullable=False),
        sa.Column("near_latitude", sa.Double),
        sa.Column("near_longitude", sa.Double),
        sa.Column("allow_split", sa.Boolean, nullable=False),
        sa.Column("pickup", sa.Boolean, nullable=False),
        sa.Column("owner", sa.Text, nullable=False, server_default=""),
        sa.Column("release_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("lines", postgresql.JSONB, nullable=False),
        sa.Column("expire_time", TS, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_index(
        "reservations_due", "reservations", ["expire_time"], postgresql_where=sa.text(f"state = {ACTIVE}")
    )
    op.create_index("reservations_created", "reservations", ["create_time", "id"])
    op.create_index("reservations_owner", "reservations", ["owner"])
    op.create_table(
        "reservation_allocations",
        sa.Column("reservation_id", sa.Text, sa.ForeignKey("reservations.id"), primary_key=True),
        sa.Column("line_index", sa.Integer, primary_key=True),
        sa.Column("location_id", sa.Text, primary_key=True),
        sa.Column("item_sku", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.CheckConstraint("quantity > 0", name="reservation_allocations_quantity_positive"),
    )
    op.create_index("reservation_allocations_location", "reservation_allocations", ["location_id"])
    op.create_index("reservation_allocations_item", "reservation_allocations", ["item_sku"])
    op.create_table(
        "stock_subscriptions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("customer", sa.Text, nullable=False),
        sa.Column("item_sku", sa.Text, sa.ForeignKey("items.sku"), nullable=False),
        sa.Column("location_id", sa.Text, sa.ForeignKey("locations.id")),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("channel_store", sa.Text, nullable=False, server_default=""),
        sa.Column("channel_device", sa.Text, nullable=False, server_default=""),
        sa.Column("fired_location", sa.Text),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("end_time", TS),
    )
    op.create_index("stock_subscriptions_customer", "stock_subscriptions", ["customer", "create_time"])
    op.create_index(
        "stock_subscriptions_waiting",
        "stock_subscriptions",
        ["item_sku"],
        postgresql_where=sa.text(f"state = {ACTIVE}"),
    )
    # One ACTIVE subscription per customer, item and location ("" = any location).
    op.execute(
        f"""
        CREATE UNIQUE INDEX stock_subscriptions_one_active
        ON stock_subscriptions (customer, item_sku, coalesce(location_id, ''))
        WHERE state = {ACTIVE}
        """
    )


def downgrade() -> None:
    op.drop_table("stock_subscriptions")
    op.drop_table("reservation_allocations")
    op.drop_table("reservations")
    op.drop_table("stock_movements")
    op.execute("DROP FUNCTION stock_movements_append_only()")
    op.drop_table("stock_levels")
    op.drop_table("locations")
    op.drop_table("items")
