"""Tables of the profile service (SQLAlchemy Core, own MetaData); queries live with the use
cases that need them, these are only the shapes.

Customer ids are stored bare (``c1`` for ``customers/c1``). Rows that can move between
customers in a merge (interactions, addresses, purchases) keep ``origin``, the customer they
were recorded for, which is what an unmerge sends back.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()
TS = DateTime(timezone=True)

profiles = Table(
    "profiles",
    metadata,
    Column("customer", Text, primary_key=True),
    Column("state", SmallInteger, nullable=False),
    Column("given_name", Text, nullable=False),
    Column("family_name", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("language_code", Text, nullable=False),
    Column("birthday_year", SmallInteger, nullable=False),
    Column("birthday_month", SmallInteger, nullable=False),
    Column("birthday_day", SmallInteger, nullable=False),
    Column("traits", JSONB, nullable=False),
    Column("contact_points", JSONB, nullable=False),
    Column("contact_kinds", ARRAY(SmallInteger), nullable=False),
    Column("merged_into", Text),
    Column("version", BigInteger, nullable=False),
    Column("create_time", TS),
    Column("update_time", TS),
    Column("order_count", Integer, nullable=False),
    Column("spend", JSONB, nullable=False),
    Column("spend_orders", JSONB, nullable=False),
    Column("first_purchase_time", TS),
    Column("last_purchase_time", TS),
    Column("avg_days_between", Float, nullable=False),
    Column("channels", ARRAY(SmallInteger), nullable=False),
    Column("last_interaction_time", TS),
    Column("lifetime_time", TS),
)

addresses = Table(
    "addresses",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("merge_id", BigInteger),
    Column("display_name", Text, nullable=False),
    Column("postal_address", JSONB, nullable=False),
    Column("phone", Text, nullable=False),
    Column("instructions", Text, nullable=False),
    Column("default_shipping", Boolean, nullable=False),
    Column("default_billing", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
)

interactions = Table(
    "interactions",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("type", SmallInteger, nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("store", Text, nullable=False),
    Column("device", Text, nullable=False),
    Column("occur_time", TS, nullable=False),
    Column("subject", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("attributes", JSONB, nullable=False),
    Column("staff_member", Text, nullable=False),
    Column("visit_id", Text, nullable=False),
    Column("recorded_by", Text, nullable=False),
    Column("create_time", TS, nullable=False),
)

purchases = Table(
    "purchases",
    metadata,
    Column("order_key", Text, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("placed_time", TS),
    Column("cancelled", Boolean, nullable=False),
)

channel_usage = Table(
    "channel_usage",
    metadata,
    Column("customer", Text, primary_key=True),
    Column("channel", SmallInteger, primary_key=True),
    Column("interaction_count", BigInteger, nullable=False),
    Column("first_seen", TS, nullable=False),
    Column("last_seen", TS, nullable=False),
)

merges = Table(
    "merges",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("source", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("reason", SmallInteger, nullable=False),
    Column("record", JSONB, nullable=False),
    Column("merged_by", Text, nullable=False),
    Column("merge_time", TS, nullable=False),
    Column("unmerge_time", TS),
    Column("unmerged_by", Text, nullable=False),
)

segments = Table(
    "segments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("filter", Text, nullable=False),
    Column("mode", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("compute_error", Text),
    Column("member_count", BigInteger, nullable=False),
    Column("last_compute_time", TS),
    Column("time_pass_time", TS),
    Column("creator", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("segment", Text, primary_key=True),
    Column("customer", Text, primary_key=True),
    Column("join_time", TS, nullable=False),
)

erasures = Table(
    "erasures",
    metadata,
    Column("customer", Text, primary_key=True),
    Column("requested_by", Text, nullable=False),
    Column("request_time", TS, nullable=False),
    Column("complete_time", TS),
)

erasure_receipts = Table(
    "erasure_receipts",
    metadata,
    Column("customer", Text, primary_key=True),
    Column("service", Text, primary_key=True),
    Column("state", SmallInteger, nullable=False),
    Column("failure_reason", Text, nullable=False),
    Column("counts", JSONB, nullable=False),
    Column("complete_time", TS),
)

# The personal data of a profile row, blanked: what a merged (its data lives in the target) or
# erased profile keeps of the person.
BLANK_PERSONAL_DATA = {
    "given_name": "",
    "family_name": "",
    "display_name": "",
    "language_code": "",
    "birthday_year": 0,
    "birthday_month": 0,
    "birthday_day": 0,
    "traits": {},
    "contact_points": [],
    "contact_kinds": [],
}
