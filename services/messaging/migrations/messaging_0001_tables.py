"""Messaging: templates, notifications (with their delivery schedule), delivery attempts, and the
contact point projection.

Revision ID: messaging_0001
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "messaging_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("messaging",)
depends_on: str | Sequence[str] | None = "runtime_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False, server_default=""),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("purpose", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("default_locale", sa.Text, nullable=False),
        sa.Column("contents", postgresql.JSONB, nullable=False),
        sa.Column("params", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("customer", sa.Text, nullable=False),
        sa.Column("template_id", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("purpose", sa.SmallInteger, nullable=False),
        sa.Column("params", postgresql.JSONB, nullable=False),
        sa.Column("requested_channel", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("subject_resource", sa.Text, nullable=False, server_default=""),
        sa.Column("expire_time", TS),
        sa.Column("request_id", sa.Text, nullable=False, server_default=""),
        sa.Column("by_channel", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("by_store", sa.Text, nullable=False, server_default=""),
        sa.Column("by_device", sa.Text, nullable=False, server_default=""),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("suppression_reason", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("chosen_channel", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("locale", sa.Text, nullable=False, server_default=""),
        sa.Column("language", sa.Text, nullable=False, server_default=""),
        sa.Column("rendered_subject", sa.Text, nullable=False, server_default=""),
        sa.Column("rendered_body", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "channels", postgresql.ARRAY(sa.SmallInteger), nullable=False, server_default=sa.text("'{}'")
        ),
        sa.Column(
            "failed_channels",
            postgresql.ARRAY(sa.SmallInteger),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("decide", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("decisions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reserved_channel", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("fixed_kind", sa.Text, nullable=False, server_default=""),
        sa.Column("fixed_value", sa.Text, nullable=False, server_default=""),
        sa.Column("consult", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("due_time", TS),
        sa.Column("lease_until", TS),
        sa.Column("lease_token", sa.Text),
        sa.Column("deliver_time", TS),
        sa.Column("open_time", TS),
        sa.Column("click_time", TS),
        sa.Column("erased", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_index(
        "notifications_due", "notifications", ["due_time"], postgresql_where=sa.text("due_time IS NOT NULL")
    )
    op.create_index("notifications_customer", "notifications", ["customer", "create_time", "id"])
    op.create_index("notifications_created", "notifications", ["create_time", "id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "notification_id", sa.Text, sa.ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("channel", sa.SmallInteger, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("destination", sa.Text, nullable=False, server_default=""),
        sa.Column("error_code", sa.Text, nullable=False, server_default=""),
        sa.Column("error_message", sa.Text, nullable=False, server_default=""),
        sa.Column("provider_message_id", sa.Text),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("attempt_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_index("delivery_attempts_notification", "delivery_attempts", ["notification_id", "id"])
    op.create_index(
        "delivery_attempts_provider_message",
        "delivery_attempts",
        ["provider", "provider_message_id"],
        unique=True,
        postgresql_where=sa.text("provider_message_id IS NOT NULL"),
    )
    op.create_table(
        "contact_points",
        sa.Column("customer", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, primary_key=True),
        sa.Column("is_primary", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("update_time", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("contact_points")
    op.drop_table("delivery_attempts")
    op.drop_table("notifications")
    op.drop_table("templates")
