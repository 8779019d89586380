"""Profile tables: profiles (with lifetime figures), addresses, the interaction timeline,
purchases and channel usage behind the figures, merge records, segments and their members,
erasures and their receipts; and the SQL that builds SegmentMembershipChangedEvent payloads so
a full recompute writes its events in the database.

Revision ID: profile_0001
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "profile_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("profile",)
depends_on: str | Sequence[str] | None = "runtime_0001"

TS = sa.DateTime(timezone=True)
JSONB = postgresql.JSONB
EMPTY_OBJECT = sa.text("'{}'::jsonb")
EMPTY_LIST = sa.text("'[]'::jsonb")


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.Text, nullable=False, server_default="")


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("customer", sa.Text, primary_key=True),
        sa.Column("state", sa.SmallInteger, nullable=False, server_default=sa.text("1")),
        _text("given_name"),
        _text("family_name"),
        _text("display_name"),
        _text("language_code"),
        sa.Column("birthday_year", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("birthday_month", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("birthday_day", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("traits", JSONB, nullable=False, server_default=EMPTY_OBJECT),
        sa.Column("contact_points", JSONB, nullable=False, server_default=EMPTY_LIST),
        sa.Column("contact_kinds", postgresql.ARRAY(sa.SmallInteger), nullable=False, server_default="{}"),
        sa.Column("merged_into", sa.Text),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("create_time", TS),
        sa.Column("update_time", TS),
        # Lifetime figures, kept current by the timeline (see timeline.py).
        sa.Column("order_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("spend", JSONB, nullable=False, server_default=EMPTY_OBJECT),
        sa.Column("spend_orders", JSONB, nullable=False, server_default=EMPTY_OBJECT),
        sa.Column("first_purchase_time", TS),
        sa.Column("last_purchase_time", TS),
        sa.Column("avg_days_between", sa.Float, nullable=False, server_default=sa.text("0")),
        sa.Column("channels", postgresql.ARRAY(sa.SmallInteger), nullable=False, server_default="{}"),
        sa.Column("last_interaction_time", TS),
        sa.Column("lifetime_time", TS),
    )
    # days_since passes and time-window rules seek on these.
    for column in ("last_purchase_time", "first_purchase_time", "last_interaction_time"):
        op.create_index(f"profiles_{column}", "profiles", [column])
    op.create_index(
        "profiles_merged_into",
        "profiles",
        ["merged_into"],
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )

    op.create_table(
        "addresses",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("customer", sa.Text, nullable=False),
        # The customer the address was created for (it differs while merged into another).
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("merge_id", sa.BigInteger),
        _text("display_name"),
        sa.Column("postal_address", JSONB, nullable=False, server_default=EMPTY_OBJECT),
        _text("phone"),
        _text("instructions"),
        sa.Column("default_shipping", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("default_billing", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_index("addresses_customer", "addresses", ["customer", "update_time"])

    op.execute("CREATE SEQUENCE interactions_id_seq")
    op.create_table(
        "interactions",
        sa.Column(
            "id", sa.BigInteger, primary_key=True, server_default=sa.text("nextval('interactions_id_seq')")
        ),
        sa.Column("customer", sa.Text, nullable=False),
        # The customer it was recorded for; differs from `customer` while merged into another.
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("channel", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        _text("store"),
        _text("device"),
        sa.Column("occur_time", TS, nullable=False),
        _text("subject"),
        _text("summary"),
        sa.Column("attributes", JSONB, nullable=False, server_default=EMPTY_OBJECT),
        _text("staff_member"),
        _text("visit_id"),
        _text("recorded_by"),
        sa.Column("create_time", TS, nullable=False, server_default=sa.func.now()),
    )
    # The timeline (newest first, keyset paging), the recent window of the view, journeys'
    # touches before a purchase, erasure and merges by customer.
    op.create_index(
        "interactions_timeline", "interactions", ["customer", sa.text("occur_time DESC"), sa.text("id DESC")]
    )
    # Journeys start from the purchases of a window.
    op.create_index(
        "interactions_purchases", "interactions", ["occur_time"], postgresql_where=sa.text("type = 6")
    )

    op.create_table(
        "purchases",
        # The order's name (or the interaction's, for an order recorded without one).
        sa.Column("order_key", sa.Text, primary_key=True),
        sa.Column("customer", sa.Text, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        _text("currency"),
        sa.Column("total", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("refunded", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("channel", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("placed_time", TS),
        sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("purchases_customer", "purchases", ["customer"])

    op.create_table(
        "channel_usage",
        sa.Column("customer", sa.Text, primary_key=True),
        sa.Column("channel", sa.SmallInteger, primary_key=True),
        sa.Column("interaction_count", sa.BigInteger, nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
    )

    op.create_table(
        "merges",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("reason", sa.SmallInteger, nullable=False),
        # What came from which side, to undo it (see merges.py).
        sa.Column("record", JSONB, nullable=False),
        _text("merged_by"),
        sa.Column("merge_time", TS, nullable=False),
        sa.Column("unmerge_time", TS),
        _text("unmerged_by"),
    )
    op.create_index(
        "merges_open", "merges", ["source"], unique=True, postgresql_where=sa.text("unmerge_time IS NULL")
    )

    op.create_table(
        "segments",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False),
        _text("description"),
        sa.Column("filter", sa.Text, nullable=False),
        sa.Column("mode", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("compute_error", sa.Text),
        sa.Column("member_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("last_compute_time", TS),
        # Up to when the days_since pass has evaluated this segment's time boundaries.
        sa.Column("time_pass_time", TS),
        _text("creator"),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("1")),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
    )
    op.create_index("segments_display_name", "segments", ["display_name", "id"])
    op.create_table(
        "segment_members",
        sa.Column("segment", sa.Text, sa.ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("customer", sa.Text, primary_key=True),
        sa.Column("join_time", TS, nullable=False),
    )
    op.create_index("segment_members_customer", "segment_members", ["customer"])

    op.create_table(
        "erasures",
        sa.Column("customer", sa.Text, primary_key=True),
        _text("requested_by"),
        sa.Column("request_time", TS, nullable=False),
        sa.Column("complete_time", TS),
    )
    op.create_table(
        "erasure_receipts",
        sa.Column("customer", sa.Text, sa.ForeignKey("erasures.customer"), primary_key=True),
        sa.Column("service", sa.Text, primary_key=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        _text("failure_reason"),
        sa.Column("counts", JSONB, nullable=False, server_default=EMPTY_OBJECT),
        sa.Column("complete_time", TS),
    )

    # Protobuf wire encoding in SQL, so a segment recompute over 100,000 profiles writes its
    # SegmentMembershipChangedEvent rows with one INSERT … SELECT (checked against the
    # generated message class in tests/profile).
    op.execute(
        r"""
CREATE FUNCTION profile_pb_varint(v bigint) RETURNS bytea LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
  out bytea := ''::bytea;
  b int;
BEGIN
  LOOP
    b := (v & 127)::int;
    v := v >> 7;
    IF v = 0 THEN
      RETURN out || set_byte('\x00'::bytea, 0, b);
    END IF;
    out := out || set_byte('\x00'::bytea, 0, b | 128);
  END LOOP;
END $$;
"""
    )
    op.execute(
        r"""
CREATE FUNCTION profile_pb_string(tag int, s text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT set_byte('\x00'::bytea, 0, tag) || profile_pb_varint(octet_length(convert_to(s, 'UTF8')))
      || convert_to(s, 'UTF8')
$$;
"""
    )
    op.execute(
        r"""
CREATE FUNCTION profile_membership_event(segment text, customer text, change int, cause int, at timestamptz)
RETURNS bytea LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT profile_pb_string(10, segment) || profile_pb_string(18, customer)
      || '\x18'::bytea || profile_pb_varint(change) || '\x20'::bytea || profile_pb_varint(cause)
      || '\x2a'::bytea || profile_pb_varint(octet_length(ts)) || ts
  FROM (
    SELECT '\x08'::bytea || profile_pb_varint(floor(extract(epoch FROM at))::bigint)
        || CASE WHEN nanos > 0 THEN '\x10'::bytea || profile_pb_varint(nanos) ELSE ''::bytea END AS ts
    FROM (SELECT (extract(microseconds FROM at)::bigint % 1000000) * 1000 AS nanos) n
  ) t
$$;
"""
    )


def downgrade() -> None:
    for function in (
        "profile_membership_event(text, text, int, int, timestamptz)",
        "profile_pb_string(int, text)",
        "profile_pb_varint(bigint)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    for table in (
        "erasure_receipts",
        "erasures",
        "segment_members",
        "segments",
        "merges",
        "channel_usage",
        "purchases",
        "interactions",
        "addresses",
        "profiles",
    ):
        op.drop_table(table)
    op.execute("DROP SEQUENCE IF EXISTS interactions_id_seq")
