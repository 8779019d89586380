"""Tables the runtime keeps in every service's database (created by the runtime's migrations)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, LargeBinary, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

# Transactional outbox: written in the same transaction as the state change it announces.
outbox = Table(
    "omni_outbox",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("seq", BigInteger, nullable=False, server_default=text("nextval('omni_outbox_seq')")),
    Column("subject", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
)

# Inbox of a durable consumer: the ids of events it has handled, so redeliveries are skipped.
processed_events = Table(
    "omni_processed_events",
    metadata,
    Column("consumer", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# AIP-155 request ids and the first response given to each.
idempotency_keys = Table(
    "omni_idempotency_keys",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("request_id", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
