"""A two-dimensional index on store coordinates: "near a point" reads the stores inside a box
around it, whatever the number of stores elsewhere (a latitude index alone reads the whole band
of the earth at that latitude, which grows with the chain).

Revision ID: inventory_0002
Revises: inventory_0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "inventory_0002"
down_revision: str | Sequence[str] | None = "inventory_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX locations_point ON locations USING gist (point(longitude, latitude))")
    op.drop_index("locations_latitude", table_name="locations")


def downgrade() -> None:
    op.create_index("locations_latitude", "locations", ["latitude"])
    op.drop_index("locations_point", table_name="locations")
