"""Tables of the messaging service (its own MetaData).

- ``templates``: contents as JSONB (a list of {channel, locale, subject, body, html_body}).
- ``notifications``: one row per accepted notification; also its place in the delivery
  schedule: ``due_time`` (when the next step is due; NULL once final) and ``lease_until`` (a
  worker's claim). Workers claim due rows with ``FOR UPDATE SKIP LOCKED`` and a lease, so
  replicas share the schedule and a crashed worker's rows come back when its lease runs out.
  ``channels`` is the remaining plan: the channel being tried first, then its fallbacks.
- ``delivery_attempts``: every attempt, with the masked destination only; a provider's message
  id is unique per provider, which is how receipts find their attempt.
- ``contact_points``: the projection of the customer's addresses from identity's identifiers
  and profile's contact points (each source's rows replaced by that source's news).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Row,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"
TS = DateTime(timezone=True)

templates = Table(
    "templates",
    metadata,
    Column("id", Text, primary_key=True),
    Column("display_name", Text, nullable=False, server_default=""),
    Column("topic", Text, nullable=False),
    Column("purpose", SmallInteger, nullable=False, server_default="0"),
    Column("default_locale", Text, nullable=False),
    Column("contents", JSONB, nullable=False),
    Column("params", ARRAY(Text), nullable=False),
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("template_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("purpose", SmallInteger, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("requested_channel", SmallInteger, nullable=False, server_default="0"),
    Column("subject_resource", Text, nullable=False, server_default=""),
    Column("expire_time", TS),
    Column("request_id", Text, nullable=False, server_default=""),
    Column("by_channel", SmallInteger, nullable=False, server_default="0"),
    Column("by_store", Text, nullable=False, server_default=""),
    Column("by_device", Text, nullable=False, server_default=""),
    Column("state", SmallInteger, nullable=False),
    Column("suppression_reason", SmallInteger, nullable=False, server_default="0"),
    Column("chosen_channel", SmallInteger, nullable=False, server_default="0"),
    Column("locale", Text, nullable=False, server_default=""),
    Column("language", Text, nullable=False, server_default=""),
    Column("rendered_subject", Text, nullable=False, server_default=""),
    Column("rendered_body", Text, nullable=False, server_default=""),
    # The plan: channels still to try, the current one first; and those that failed, in order.
    Column("channels", ARRAY(SmallInteger), nullable=False, server_default=text("'{}'")),
    Column("failed_channels", ARRAY(SmallInteger), nullable=False, server_default=text("'{}'")),
    Column("tries", Integer, nullable=False, server_default="0"),
    # True while preferences must (re)decide before the next send (new, or held).
    Column("decide", Boolean, nullable=False, server_default=text("false")),
    Column("decisions", Integer, nullable=False, server_default="0"),
    Column("reserved_channel", SmallInteger, nullable=False, server_default="0"),
    # A destination given by the requester (one-time codes, double opt-in): preferences are not
    # consulted and no contact point is looked up.
    Column("fixed_kind", Text, nullable=False, server_default=""),
    Column("fixed_value", Text, nullable=False, server_default=""),
    # False when the requester asked for the message itself (a code, a double opt-in): sent
    # without consulting preferences.
    Column("consult", Boolean, nullable=False, server_default=text("true")),
    Column("due_time", TS),
    Column("lease_until", TS),
    Column("lease_token", Text),
    Column("deliver_time", TS),
    Column("open_time", TS),
    Column("click_time", TS),
    Column("erased", Boolean, nullable=False, server_default=text("false")),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
    Index("notifications_due", "due_time", postgresql_where=text("due_time IS NOT NULL")),
    Index("notifications_customer", "customer", "create_time", "id"),
    Index("notifications_created", "create_time", "id"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("notification_id", Text, ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("provider", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("destination", Text, nullable=False, server_default=""),
    Column("error_code", Text, nullable=False, server_default=""),
    Column("error_message", Text, nullable=False, server_default=""),
    Column("provider_message_id", Text),
    Column("idempotency_key", Text, nullable=False),
    Column("attempt_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
    Index("delivery_attempts_notification", "notification_id", "id"),
    Index(
        "delivery_attempts_provider_message",
        "provider",
        "provider_message_id",
        unique=True,
        postgresql_where=text("provider_message_id IS NOT NULL"),
    ),
)

contact_points = Table(
    "contact_points",
    metadata,
    Column("customer", Text, primary_key=True),
    Column("source", Text, primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("value", Text, primary_key=True),
    Column("is_primary", Boolean, nullable=False, server_default=text("false")),
    Column("verified", Boolean, nullable=False, server_default=text("false")),
    Column("update_time", TS, nullable=False),
)
