"""Tables of the preferences service (its own MetaData) and the SQL that carries its guarantees.

- ``consents``: one row per (customer, channel, topic), the current state. The audience index
  ``consents_granted (topic, customer_id, channel) WHERE state = GRANTED`` serves
  ListOptedInCustomers: one ordered index range per topic ("offers" and "*"), merged by the
  planner (Merge Append), paged by customer id — cost per page, not per audience.
- ``consent_events``: the ledger, append-only in the database: a trigger refuses DELETE, and
  refuses every UPDATE except the one-way pseudonymisation of an erased customer (customer id
  and recorded_by replaced by the pseudonym, nothing else changed). Written in the same
  transaction as the change it records.
- ``confirmation_tokens``: double opt-in tokens, stored as SHA-256 hashes only; single use.
- ``contacts``: marketing contacts counted against frequency caps; reservations are serialised
  per customer with a transaction-level advisory lock, so concurrent senders never exceed a cap.
- ``contact_points``: the projection of profile's and identity's contact data (which channels
  can reach a customer, and whether the address is verified); ``projection_marks`` keeps the
  time of the last event applied per source so a late, older event cannot undo a newer one.
- ``customer_states``: customers who can no longer be contacted (merged into another, erased).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    MetaData,
    Row,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession

metadata = MetaData()
AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"
TS = DateTime(timezone=True)
GRANTED = 1
PENDING = 4

preferences = Table(
    "preferences",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("preferred_channels", ARRAY(SmallInteger), nullable=False, server_default=text("'{}'")),
    Column("quiet_hours", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("time_zone", Text, nullable=False, server_default=""),
    Column("language_code", Text, nullable=False, server_default=""),
    Column("frequency_caps", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("preferred_store", Text, nullable=False, server_default=""),
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column("update_time", TS, nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("legal_basis", SmallInteger, nullable=False),
    Column("source_channel", SmallInteger, nullable=False, server_default="0"),
    Column("source_store", Text, nullable=False, server_default=""),
    Column("source_device", Text, nullable=False, server_default=""),
    Column("recorded_by", Text, nullable=False, server_default=""),
    Column("evidence", Text, nullable=False, server_default=""),
    Column("grant_time", TS),
    Column("expire_time", TS),  # of a PENDING_CONFIRMATION consent
    Column("destination", Text, nullable=False, server_default=""),  # the address being confirmed
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
    UniqueConstraint("customer_id", "channel", "topic", name="consents_one_per_channel_topic"),
    Index("consents_granted", "topic", "customer_id", "channel", postgresql_where=text(f"state = {GRANTED}")),
    Index("consents_pending_due", "expire_time", postgresql_where=text(f"state = {PENDING}")),
)

consent_events = Table(
    "consent_events",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("consent_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("previous_state", SmallInteger, nullable=False),
    Column("legal_basis", SmallInteger, nullable=False),
    Column("source_channel", SmallInteger, nullable=False, server_default="0"),
    Column("source_store", Text, nullable=False, server_default=""),
    Column("source_device", Text, nullable=False, server_default=""),
    Column("recorded_by", Text, nullable=False, server_default=""),
    Column("evidence", Text, nullable=False, server_default=""),
    Column("create_time", TS, nullable=False),
    Index("consent_events_consent", "customer_id", "consent_id", "create_time", "seq"),
    Index("consent_events_customer", "customer_id", "create_time", "seq"),
)

confirmation_tokens = Table(
    "confirmation_tokens",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column("consent_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),  # see consents.TokenState
    Column("expire_time", TS, nullable=False),
    Column("create_time", TS, nullable=False),
    Index("confirmation_tokens_consent", "consent_id"),
    Index("confirmation_tokens_customer", "customer_id"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("contact_time", TS, nullable=False),
    Column("request_id", Text, nullable=False, server_default=""),
    Index("contacts_customer_time", "customer_id", "contact_time"),
)

contact_points = Table(
    "contact_points",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("origin", Text, primary_key=True),  # "profile" or an identity identifier's name
    Column("channel", SmallInteger, primary_key=True),
    Column("value", Text, primary_key=True),
    Column("verified", Boolean, nullable=False, server_default=text("false")),
    Column("is_primary", Boolean, nullable=False, server_default=text("false")),
)

projection_marks = Table(
    "projection_marks",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("origin", Text, primary_key=True),
    Column("occur_time", TS, nullable=False),
)

# What the profile says that a decision needs besides contact points: its language.
profile_facts = Table(
    "profile_facts",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("language_code", Text, nullable=False, server_default=""),
    Column("occur_time", TS, nullable=False),
)

customer_states = Table(
    "customer_states",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("state", SmallInteger, nullable=False),  # 1 merged, 2 erased
    Column("merged_into", Text, nullable=False, server_default=""),
    Column("update_time", TS, nullable=False),
)

merges = Table(
    "merges",
    metadata,
    Column("id", Text, primary_key=True),
    Column("source_customer", Text, nullable=False),
    Column("target_customer", Text, nullable=False),
    # The survivor's consents before the merge and the ones the merge wrote (for an unmerge).
    Column("target_before", JSONB, nullable=False),
    Column("changed", JSONB, nullable=False),
    Column("merge_time", TS, nullable=False),
    Column("undone", Boolean, nullable=False, server_default=text("false")),
    Index("merges_pair", "source_customer", "target_customer"),
)

MERGED = 1
ERASED = 2


async def lock_customer(session: AsyncSession, customer_id: str) -> None:
    """Serialise writers of one customer's caps, merges and consents (held to commit)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"preferences:{customer_id}"}
    )


def count_rows(result: Any) -> int:
    return int(result.rowcount or 0)
