"""Identity: customers, identifiers, staff, service clients, sessions, refresh tokens, one-time
codes, log-in throttle, signing keys.

Revision ID: identity_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "identity_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("identity",)
depends_on: str | Sequence[str] | None = "runtime_0001"


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "identity_customers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False, server_default=""),
        sa.Column("password_hash", sa.Text),
        sa.Column("origin_channel", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("origin_store", sa.Text, nullable=False, server_default=""),
        sa.Column("origin_device", sa.Text, nullable=False, server_default=""),
        sa.Column("merged_into", sa.Text),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("lock_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("register_time", sa.DateTime(timezone=True)),
        sa.Column("erase_time", sa.DateTime(timezone=True)),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
    )
    op.create_table(
        "identity_identifiers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "customer_id",
            sa.Text,
            sa.ForeignKey("identity_customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("is_primary", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("source_channel", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("source_store", sa.Text, nullable=False, server_default=""),
        sa.Column("source_device", sa.Text, nullable=False, server_default=""),
        sa.Column("linked_by", sa.Text, nullable=False, server_default=""),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("verify_time", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("kind", "value", name="identity_identifiers_kind_value"),
    )
    op.create_index("identity_identifiers_customer", "identity_identifiers", ["customer_id"])
    op.create_table(
        "identity_staff_members",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("email", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("roles", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("store", sa.Text, nullable=False, server_default=""),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
    )
    op.create_table(
        "identity_service_clients",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("roles", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("token_lifetime_seconds", sa.Integer),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("secret_create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("previous_secret_hash", sa.Text),
        sa.Column("previous_secret_expire_time", sa.DateTime(timezone=True)),
        sa.Column("bootstrap", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
    )
    op.create_table(
        "identity_sessions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("auth_method", sa.SmallInteger, nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("store", sa.Text, nullable=False, server_default=""),
        sa.Column("device", sa.Text, nullable=False, server_default=""),
        sa.Column("user_agent", sa.Text, nullable=False, server_default=""),
        sa.Column("ip_address", sa.Text, nullable=False, server_default=""),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("last_refresh_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoke_time", sa.DateTime(timezone=True)),
        sa.Column("revoke_reason", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
    )
    op.create_index("identity_sessions_principal", "identity_sessions", ["principal", "state"])
    op.create_table(
        "identity_refresh_tokens",
        sa.Column("token_hash", sa.LargeBinary, primary_key=True),
        sa.Column(
            "session_id",
            sa.Text,
            sa.ForeignKey("identity_sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_time", sa.DateTime(timezone=True)),
    )
    op.create_index("identity_refresh_tokens_session", "identity_refresh_tokens", ["session_id"])
    op.create_table(
        "identity_challenges",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("purpose", sa.SmallInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("customer_id", sa.Text),
        sa.Column("code_hash", sa.LargeBinary),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("allow_registration", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resend_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_time", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "identity_challenges_destination", "identity_challenges", ["kind", "value", "create_time"]
    )
    op.create_table(
        "identity_login_throttle",
        sa.Column("key", sa.LargeBinary, primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True)),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )
    op.create_table(
        "identity_signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("private_key", sa.LargeBinary, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("retire_time", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    for table in (
        "identity_signing_keys",
        "identity_login_throttle",
        "identity_challenges",
        "identity_refresh_tokens",
        "identity_sessions",
        "identity_service_clients",
        "identity_staff_members",
        "identity_identifiers",
        "identity_customers",
    ):
        op.drop_table(table)
