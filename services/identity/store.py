"""Identity's tables (SQLAlchemy Core, own MetaData) and the queries the API runs on them.

Uniqueness that matters for security lives in the database, not in read-then-write code:
an identifier ``(kind, value)`` belongs to one customer (concurrent registrations of one
e-mail: exactly one insert wins), a staff e-mail to one staff member, a refresh-token hash to
one session. Rows that several calls may change at once are read ``FOR UPDATE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

metadata = MetaData()

_now = func.now()


def _times() -> list[Column[Any]]:
    return [
        Column("create_time", DateTime(timezone=True), nullable=False, server_default=_now),
        Column("update_time", DateTime(timezone=True), nullable=False, server_default=_now),
    ]


customers = Table(
    "identity_customers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("state", SmallInteger, nullable=False),
    Column("display_name", Text, nullable=False, server_default=""),
    Column("password_hash", Text),
    Column("origin_channel", SmallInteger, nullable=False, server_default=text("0")),
    Column("origin_store", Text, nullable=False, server_default=""),
    Column("origin_device", Text, nullable=False, server_default=""),
    Column("merged_into", Text),
    # Consecutive failed log-ins across all of the customer's identifiers, and the automatic
    # lock they caused (see domain.LockoutPolicy). Staff locks use state LOCKED instead.
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", DateTime(timezone=True)),
    Column("lock_reason", Text, nullable=False, server_default=""),
    *_times(),
    Column("register_time", DateTime(timezone=True)),
    Column("erase_time", DateTime(timezone=True)),
    Column("version", Integer, nullable=False, server_default=text("1")),
)

identifiers = Table(
    "identity_identifiers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer_id", Text, ForeignKey("identity_customers.id", ondelete="CASCADE"), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("value", Text, nullable=False),
    Column("verified", Boolean, nullable=False, server_default=text("false")),
    Column("is_primary", Boolean, nullable=False, server_default=text("false")),
    Column("source_channel", SmallInteger, nullable=False, server_default=text("0")),
    Column("source_store", Text, nullable=False, server_default=""),
    Column("source_device", Text, nullable=False, server_default=""),
    Column("linked_by", Text, nullable=False, server_default=""),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("verify_time", DateTime(timezone=True)),
    UniqueConstraint("kind", "value", name="identity_identifiers_kind_value"),
    Index("identity_identifiers_customer", "customer_id"),
)

staff_members = Table(
    "identity_staff_members",
    metadata,
    Column("id", Text, primary_key=True),
    Column("email", Text, nullable=False, unique=True),
    Column("display_name", Text, nullable=False),
    Column("roles", ARRAY(Text), nullable=False),
    Column("store", Text, nullable=False, server_default=""),
    Column("state", SmallInteger, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", DateTime(timezone=True)),
    *_times(),
    Column("version", Integer, nullable=False, server_default=text("1")),
)

service_clients = Table(
    "identity_service_clients",
    metadata,
    Column("id", Text, primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("channel", SmallInteger, nullable=False, server_default=text("0")),
    Column("state", SmallInteger, nullable=False),
    Column("roles", ARRAY(Text), nullable=False),
    Column("token_lifetime_seconds", Integer),
    Column("secret_hash", Text, nullable=False),
    Column("secret_create_time", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("previous_secret_hash", Text),
    Column("previous_secret_expire_time", DateTime(timezone=True)),
    # Created from OMNI_IDENTITY_BOOTSTRAP_CLIENTS_FILE (Omni's own services); kept in sync with it.
    Column("bootstrap", Boolean, nullable=False, server_default=text("false")),
    *_times(),
    Column("version", Integer, nullable=False, server_default=text("1")),
)

# A session is one refresh-token family: every rotation adds a token row to it; presenting a
# rotated-out token revokes the session.
sessions = Table(
    "identity_sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("principal", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("auth_method", SmallInteger, nullable=False),
    Column("channel", SmallInteger, nullable=False, server_default=text("0")),
    Column("store", Text, nullable=False, server_default=""),
    Column("device", Text, nullable=False, server_default=""),
    Column("user_agent", Text, nullable=False, server_default=""),
    Column("ip_address", Text, nullable=False, server_default=""),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("last_refresh_time", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    Column("revoke_time", DateTime(timezone=True)),
    Column("revoke_reason", SmallInteger, nullable=False, server_default=text("0")),
    Index("identity_sessions_principal", "principal", "state"),
)

refresh_tokens = Table(
    "identity_refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("session_id", Text, ForeignKey("identity_sessions.id", ondelete="CASCADE"), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    Column("rotated_time", DateTime(timezone=True)),
    Index("identity_refresh_tokens_session", "session_id"),
)

# One-time-code challenges. ``code_hash`` is NULL for decoys: challenges answered to unknown
# destinations so that the answer does not reveal whether an account exists; they never verify.
challenges = Table(
    "identity_challenges",
    metadata,
    Column("id", Text, primary_key=True),
    Column("purpose", SmallInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("value", Text, nullable=False),
    Column("customer_id", Text),
    Column("code_hash", LargeBinary),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("allow_registration", Boolean, nullable=False, server_default=text("false")),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    Column("resend_time", DateTime(timezone=True), nullable=False),
    Column("consumed_time", DateTime(timezone=True)),
    Index("identity_challenges_destination", "kind", "value", "create_time"),
)

login_throttle = Table(
    "identity_login_throttle",
    metadata,
    Column("key", LargeBinary, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("blocked_until", DateTime(timezone=True)),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=_now),
)

# Local mode's signing keys (with OMNI_JWT_PRIVATE_KEYS_DIR they come from files instead).
signing_keys = Table(
    "identity_signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    # PKCS#8 DER, unencrypted: acceptable for the local platform only; production mounts keys
    # from a Kubernetes Secret (see keys.py).
    Column("private_key", LargeBinary, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=_now),
    # Set when a newer key takes over: the key is published until then, so tokens it signed
    # keep verifying until they expire.
    Column("retire_time", DateTime(timezone=True)),
)


# --- queries -----------------------------------------------------------------------------------


async def customer_for_update(session: AsyncSession, customer_id: str) -> Row[Any] | None:
    return (
        await session.execute(select(customers).where(customers.c.id == customer_id).with_for_update())
    ).first()


async def customer(session: AsyncSession, customer_id: str) -> Row[Any] | None:
    return (await session.execute(select(customers).where(customers.c.id == customer_id))).first()


def _primary(kind: int) -> Any:
    """Correlated sub-select: the customer's primary identifier value of one kind (or NULL)."""
    own = identifiers.alias(f"primary_{kind}")
    return (
        select(own.c.value)
        .where(own.c.customer_id == customers.c.id, own.c.kind == kind, own.c.is_primary.is_(True))
        .correlate(customers)
        .limit(1)
        .scalar_subquery()
    )


CUSTOMER_VIEW = (*customers.c, _primary(1).label("primary_email"), _primary(2).label("primary_phone"))


async def customer_view(reader: AsyncSession | AsyncConnection, customer_id: str) -> Row[Any] | None:
    """A customer row with its primary e-mail and phone, in one statement (the read path)."""
    return (await reader.execute(select(*CUSTOMER_VIEW).where(customers.c.id == customer_id))).first()


async def resolve(reader: AsyncSession | AsyncConnection, kind: int, value: str) -> Row[Any] | None:
    """An identifier and its holder (with primaries) in one statement: ResolveIdentity's hot path.

    Identifier columns come back prefixed ``identifier_``.
    """
    return (
        await reader.execute(
            select(*CUSTOMER_VIEW, *(c.label(f"identifier_{c.name}") for c in identifiers.c))
            .join_from(identifiers, customers, customers.c.id == identifiers.c.customer_id)
            .where(identifiers.c.kind == kind, identifiers.c.value == value)
        )
    ).first()


async def primary_values(session: AsyncSession, customer_id: str) -> tuple[str, str]:
    """The customer's primary e-mail and phone (empty when none)."""
    rows = (
        await session.execute(
            select(identifiers.c.kind, identifiers.c.value).where(
                identifiers.c.customer_id == customer_id,
                identifiers.c.is_primary.is_(True),
                identifiers.c.kind.in_((1, 2)),
            )
        )
    ).all()
    by_kind = {row.kind: row.value for row in rows}
    return by_kind.get(1, ""), by_kind.get(2, "")


async def identifier_by_key(
    session: AsyncSession, kind: int, value: str, *, for_update: bool = False
) -> Row[Any] | None:
    query = select(identifiers).where(identifiers.c.kind == kind, identifiers.c.value == value)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def customer_identifiers(session: AsyncSession, customer_id: str) -> Sequence[Row[Any]]:
    return (
        await session.execute(
            select(identifiers)
            .where(identifiers.c.customer_id == customer_id)
            .order_by(identifiers.c.create_time, identifiers.c.id)
        )
    ).all()


async def insert_identifier(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert unless ``(kind, value)`` is taken; False when another row holds it.

    ON CONFLICT DO NOTHING waits for a concurrent inserter to finish, so of any number of
    concurrent calls exactly one gets True.
    """
    result = await session.execute(
        insert(identifiers)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["kind", "value"])
        .returning(identifiers.c.id)
    )
    return result.first() is not None


async def bump(session: AsyncSession, table: Table, row_id: str, **values: Any) -> None:
    """Change a versioned row (customer, staff member, service client) and its version (the etag)."""
    await session.execute(
        update(table)
        .where(table.c.id == row_id)
        .values(**values, update_time=func.now(), version=table.c.version + 1)
    )


async def bump_customer(session: AsyncSession, customer_id: str, **values: Any) -> None:
    await bump(session, customers, customer_id, **values)


async def throttle_row(session: AsyncSession, key: bytes) -> Row[Any] | None:
    return (await session.execute(select(login_throttle).where(login_throttle.c.key == key))).first()


async def record_throttle_failure(
    session: AsyncSession, key: bytes, blocked_until_for: Any, now: datetime
) -> int:
    """Count one failure on a throttle key; ``blocked_until_for(failures)`` sets the back-off."""
    row = (
        await session.execute(
            insert(login_throttle)
            .values(key=key, failures=1, update_time=now)
            .on_conflict_do_update(
                index_elements=["key"],
                set_={"failures": login_throttle.c.failures + 1, "update_time": now},
            )
            .returning(login_throttle.c.failures)
        )
    ).one()
    failures = int(row.failures)
    blocked = blocked_until_for(failures)
    if blocked is not None:
        await session.execute(
            update(login_throttle).where(login_throttle.c.key == key).values(blocked_until=blocked)
        )
    return failures


async def clear_throttle(session: AsyncSession, key: bytes) -> None:
    await session.execute(login_throttle.delete().where(login_throttle.c.key == key))


async def active_sessions_of(session: AsyncSession, principal: str) -> Sequence[Row[Any]]:
    return (
        await session.execute(
            select(sessions).where(sessions.c.principal == principal, sessions.c.state == 1).with_for_update()
        )
    ).all()


async def purge_expired(session: AsyncSession, now: datetime) -> None:
    """Drop rows nobody can use any more: old challenges, dead sessions' tokens, idle throttles."""
    from datetime import timedelta

    await session.execute(challenges.delete().where(challenges.c.expire_time < now - timedelta(days=1)))
    await session.execute(
        sessions.delete().where(
            ((sessions.c.state != 1) & (sessions.c.revoke_time < now - timedelta(days=30)))
            | (sessions.c.expire_time < now - timedelta(days=30))
        )
    )
    await session.execute(
        refresh_tokens.delete().where(
            refresh_tokens.c.rotated_time.is_not(None), refresh_tokens.c.expire_time < now
        )
    )
    await session.execute(
        login_throttle.delete().where(
            login_throttle.c.update_time < now - timedelta(days=1),
            (login_throttle.c.blocked_until.is_(None)) | (login_throttle.c.blocked_until < now),
        )
    )
