"""Runtime tables: transactional outbox, consumer inbox, request-id idempotency.

Revision ID: runtime_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "runtime_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("runtime",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE omni_outbox_seq")
    op.create_table(
        "omni_outbox",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default=sa.text("nextval('omni_outbox_seq')")),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    # The relay only ever looks at unpublished rows, in commit order.
    op.create_index(
        "omni_outbox_pending", "omni_outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_index("omni_outbox_published_at", "omni_outbox", ["published_at"])
    op.create_table(
        "omni_processed_events",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("omni_processed_events_at", "omni_processed_events", ["processed_at"])
    op.create_table(
        "omni_idempotency_keys",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("omni_idempotency_keys_at", "omni_idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("omni_idempotency_keys")
    op.drop_table("omni_processed_events")
    op.drop_table("omni_outbox")
    op.execute("DROP SEQUENCE omni_outbox_seq")
