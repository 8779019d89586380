"""Preferences: preferences, consents with their append-only ledger, double opt-in tokens,
contacts counted against caps, the contact-point projection, merges.

Revision ID: preferences_0001
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "preferences_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("preferences",)
depends_on: str | Sequence[str] | None = "runtime_0001"

TS = sa.DateTime(timezone=True)
GRANTED = 1
PENDING = 4
# A pseudonymised customer id (see services/preferences/erasure.py).
PSEUDONYM = "erased-%"


def upgrade() -> None:
    op.create_table(
        "preferences",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column(
            "preferred_channels",
            postgresql.ARRAY(sa.SmallInteger),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column("quiet_hours", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("time_zone", sa.Text, nullable=False, server_default=""),
        sa.Column("language_code", sa.Text, nullable=False, server_default=""),
        sa.Column("frequency_caps", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("preferred_store", sa.Text, nullable=False, server_default=""),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_table(
        "consents",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("legal_basis", sa.SmallInteger, nullable=False),
        sa.Column("source_channel", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("source_store", sa.Text, nullable=False, server_default=""),
        sa.Column("source_device", sa.Text, nullable=False, server_default=""),
        sa.Column("recorded_by", sa.Text, nullable=False, server_default=""),
        sa.Column("evidence", sa.Text, nullable=False, server_default=""),
        sa.Column("grant_time", TS),
        sa.Column("expire_time", TS),
        sa.Column("destination", sa.Text, nullable=False, server_default=""),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
        sa.UniqueConstraint("customer_id", "channel", "topic", name="consents_one_per_channel_topic"),
    )
    op.create_index(
        "consents_granted",
        "consents",
        ["topic", "customer_id", "channel"],
        postgresql_where=sa.text(f"state = {GRANTED}"),
    )
    op.create_index(
        "consents_pending_due", "consents", ["expire_time"], postgresql_where=sa.text(f"state = {PENDING}")
    )
    op.create_table(
        "consent_events",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("consent_id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("previous_state", sa.SmallInteger, nullable=False),
        sa.Column("legal_basis", sa.SmallInteger, nullable=False),
        sa.Column("source_channel", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("source_store", sa.Text, nullable=False, server_default=""),
        sa.Column("source_device", sa.Text, nullable=False, server_default=""),
        sa.Column("recorded_by", sa.Text, nullable=False, server_default=""),
        sa.Column("evidence", sa.Text, nullable=False, server_default=""),
        sa.Column("create_time", TS, nullable=False),
    )
    op.create_index(
        "consent_events_consent", "consent_events", ["customer_id", "consent_id", "create_time", "seq"]
    )
    op.create_index("consent_events_customer", "consent_events", ["customer_id", "create_time", "seq"])
    # The ledger is the legal record: nobody deletes an entry or rewrites what it says. The one
    # UPDATE allowed is erasure's one-way pseudonymisation of who the entry is about (and of
    # recorded_by when the customer recorded it themselves); every other column must stay.
    op.execute(
        f"""
        CREATE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                IF OLD.customer_id NOT LIKE '{PSEUDONYM}' AND NEW.customer_id LIKE '{PSEUDONYM}'
                   AND (NEW.recorded_by = OLD.recorded_by
                        OR NEW.recorded_by = 'customers/' || NEW.customer_id)
                   AND (NEW.seq, NEW.id, NEW.consent_id, NEW.channel, NEW.topic, NEW.state,
                        NEW.previous_state, NEW.legal_basis, NEW.source_channel, NEW.source_store,
                        NEW.source_device, NEW.evidence, NEW.create_time)
                       IS NOT DISTINCT FROM
                       (OLD.seq, OLD.id, OLD.consent_id, OLD.channel, OLD.topic, OLD.state,
                        OLD.previous_state, OLD.legal_basis, OLD.source_channel, OLD.source_store,
                        OLD.source_device, OLD.evidence, OLD.create_time)
                THEN
                    RETURN NEW;
                END IF;
            END IF;
            RAISE EXCEPTION 'consent_events is append-only (% refused)', TG_OP
                USING ERRCODE = 'restrict_violation';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_events_append_only
        BEFORE UPDATE OR DELETE ON consent_events
        FOR EACH ROW EXECUTE FUNCTION consent_events_append_only()
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_events_no_truncate
        BEFORE TRUNCATE ON consent_events
        FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only()
        """
    )
    op.create_table(
        "confirmation_tokens",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("consent_id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("expire_time", TS, nullable=False),
        sa.Column("create_time", TS, nullable=False),
    )
    op.create_index("confirmation_tokens_consent", "confirmation_tokens", ["consent_id"])
    op.create_index("confirmation_tokens_customer", "confirmation_tokens", ["customer_id"])
    op.create_table(
        "contacts",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("contact_time", TS, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("contacts_customer_time", "contacts", ["customer_id", "contact_time"])
    op.create_table(
        "contact_points",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("origin", sa.Text, primary_key=True),
        sa.Column("channel", sa.SmallInteger, primary_key=True),
        sa.Column("value", sa.Text, primary_key=True),
        sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("is_primary", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "projection_marks",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("origin", sa.Text, primary_key=True),
        sa.Column("occur_time", TS, nullable=False),
    )
    op.create_table(
        "profile_facts",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("language_code", sa.Text, nullable=False, server_default=""),
        sa.Column("occur_time", TS, nullable=False),
    )
    op.create_table(
        "customer_states",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("merged_into", sa.Text, nullable=False, server_default=""),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_table(
        "merges",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("source_customer", sa.Text, nullable=False),
        sa.Column("target_customer", sa.Text, nullable=False),
        sa.Column("target_before", postgresql.JSONB, nullable=False),
        sa.Column("changed", postgresql.JSONB, nullable=False),
        sa.Column("merge_time", TS, nullable=False),
        sa.Column("undone", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("merges_pair", "merges", ["source_customer", "target_customer"])


def downgrade() -> None:
    for table in (
        "merges",
        "customer_states",
        "profile_facts",
        "projection_marks",
        "contact_points",
        "contacts",
        "confirmation_tokens",
    ):
        op.drop_table(table)
    op.execute("DROP TRIGGER consent_events_no_truncate ON consent_events")
    op.execute("DROP TRIGGER consent_events_append_only ON consent_events")
    op.execute("DROP FUNCTION consent_events_append_only()")
    op.drop_table("consent_events")
    op.drop_table("consents")
    op.drop_table("preferences")
