"""Tables of the inventory service (its own MetaData) and the ledger's SQL.

Plain lookups and CRUD statements live next to their use case (catalogue, reservations, …);
the statements that carry the ledger's guarantees live here, in one place to review.

The ledger's invariants live in the schema as much as in code:
- ``stock_levels`` holds one row per (location, item) that ever held stock. ``reserved``,
  ``safety_stock`` and ``low_stock_threshold`` are CHECKed non-negative. ``on_hand`` has no
  lower bound on purpose: a till sale is never refused (the goods were in the customer's
  hand), so a level can be oversold until a stock count corrects it.
- ``stock_movements`` is append-only: a trigger refuses UPDATE and DELETE, so the history
  cannot be rewritten by a code path someone adds later. Every change of ``on_hand`` or
  ``reserved`` is written together with its movement in one transaction; the sum of a level's
  movements is its current quantities.
- Reservations take stock with one guarded statement per (location, item):
  ``UPDATE … SET reserved = reserved + q WHERE … AND on_hand - reserved - safety_stock >= q``.
  PostgreSQL re-checks the condition on the newest row version after waiting for a concurrent
  writer, so two callers can never both take the last unit. Rows are always touched in
  (location, item) order, so two multi-line reservations cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Row,
    SmallInteger,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    false,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.db.engine import Reader

metadata = MetaData()

# A result row of any width (SQLAlchemy 2.1 types rows by their column tuple).
AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"

TS = DateTime(timezone=True)

items = Table(
    "items",
    metadata,
    Column("sku", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("prices", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("active", Boolean, nullable=False, server_default=false()),
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
)

locations = Table(
    "locations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("type", SmallInteger, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("address", JSONB),
    Column("latitude", Double),
    Column("longitude", Double),
    Column("opening_hours", JSONB),
    Column("ship_from", Boolean, nullable=False, server_default=false()),
    Column("pickup_enabled", Boolean, nullable=False, server_default=false()),
    Column("allocation_priority", Integer, nullable=False, server_default="0"),
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
)

stock_levels = Table(
    "stock_levels",
    metadata,
    Column("location_id", Text, ForeignKey("locations.id"), primary_key=True),
    Column("item_sku", Text, ForeignKey("items.sku"), primary_key=True),
    Column("on_hand", Integer, nullable=False, server_default="0"),
    Column("reserved", Integer, nullable=False, server_default="0"),
    Column("safety_stock", Integer, nullable=False, server_default="0"),
    Column("low_stock_threshold", Integer, nullable=False, server_default="0"),
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column("update_time", TS, nullable=False),
    CheckConstraint("reserved >= 0", name="stock_levels_reserved_not_negative"),
    CheckConstraint("safety_stock >= 0", name="stock_levels_safety_not_negative"),
    CheckConstraint("low_stock_threshold >= 0", name="stock_levels_threshold_not_negative"),
)

stock_movements = Table(
    "stock_movements",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("location_id", Text, nullable=False),
    Column("item_sku", Text, nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("on_hand_delta", Integer, nullable=False),
    Column("reserved_delta", Integer, nullable=False),
    Column("on_hand_after", Integer, nullable=False),
    Column("reserved_after", Integer, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("request_id", Text, nullable=False, server_default=""),
    Column("reservation_id", Text),
    Column("reference", Text, nullable=False, server_default=""),
    Column("channel", SmallInteger, nullable=False, server_default="0"),
    Column("channel_store", Text, nullable=False, server_default=""),
    Column("channel_device", Text, nullable=False, server_default=""),
    Column("actor", Text, nullable=False, server_default=""),
    Column("create_time", TS, nullable=False),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("state", SmallInteger, nullable=False),
    Column("strategy", SmallInteger, nullable=False),
    Column("near_latitude", Double),
    Column("near_longitude", Double),
    Column("allow_split", Boolean, nullable=False),
    Column("pickup", Boolean, nullable=False),
    Column("owner", Text, nullable=False, server_default=""),
    Column("release_reason", Text, nullable=False, server_default=""),
    # The lines as requested with their allocations (immutable after creation).
    Column("lines", JSONB, nullable=False),
    Column("expire_time", TS, nullable=False),
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column("create_time", TS, nullable=False),
    Column("update_time", TS, nullable=False),
)

# What a reservation holds, one row per (line, location): what commit/release/expiry give back.
reservation_allocations = Table(
    "reservation_allocations",
    metadata,
    Column("reservation_id", Text, ForeignKey("reservations.id"), primary_key=True),
    Column("line_index", Integer, primary_key=True),
    Column("location_id", Text, primary_key=True),
    Column("item_sku", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    CheckConstraint("quantity > 0", name="reservation_allocations_quantity_positive"),
)

stock_subscriptions = Table(
    "stock_subscriptions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("item_sku", Text, ForeignKey("items.sku"), nullable=False),
    Column("location_id", Text, ForeignKey("locations.id")),
    Column("state", SmallInteger, nullable=False),
    Column("channel", SmallInteger, nullable=False, server_default="0"),
    Column("channel_store", Text, nullable=False, server_default=""),
    Column("channel_device", Text, nullable=False, server_default=""),
    Column("fired_location", Text),
    Column("create_time", TS, nullable=False),
    Column("end_time", TS),
)

Index("stock_levels_item", stock_levels.c.item_sku, stock_levels.c.location_id)
# "Near a point": the stores inside a box around it (GiST on the coordinates, inventory_0002).
LOCATION_POINT = func.point(locations.c.longitude, locations.c.latitude)
Index("locations_point", LOCATION_POINT, postgresql_using="gist")
Index(
    "stock_movements_level", stock_movements.c.location_id, stock_movements.c.item_sku, stock_movements.c.seq
)
Index("stock_movements_item", stock_movements.c.item_sku, stock_movements.c.seq)
Index("stock_movements_time", stock_movements.c.create_time, stock_movements.c.seq)
Index("stock_movements_reservation", stock_movements.c.reservation_id)
Index(
    "reservations_due",
    reservations.c.expire_time,
    postgresql_where=reservations.c.state == res.RESERVATION_STATE_ACTIVE,
)
Index("reservations_created", reservations.c.create_time, reservations.c.id)
Index("reservations_owner", reservations.c.owner)
Index("reservation_allocations_location", reservation_allocations.c.location_id)
Index("reservation_allocations_item", reservation_allocations.c.item_sku)
Index("stock_subscriptions_customer", stock_subscriptions.c.customer, stock_subscriptions.c.create_time)
Index(
    "stock_subscriptions_waiting",
    stock_subscriptions.c.item_sku,
    postgresql_where=stock_subscriptions.c.state == res.STOCK_SUBSCRIPTION_STATE_ACTIVE,
)

# ---------------------------------------------------------------------------------------------
# Stock level expressions
# ---------------------------------------------------------------------------------------------

AVAILABLE = func.greatest(0, stock_levels.c.on_hand - stock_levels.c.reserved - stock_levels.c.safety_stock)
STATUS = case(
    (stock_levels.c.on_hand < stock_levels.c.reserved, res.STOCK_STATUS_OVERSOLD),
    (AVAILABLE == 0, res.STOCK_STATUS_OUT_OF_STOCK),
    (
        and_(stock_levels.c.low_stock_threshold > 0, stock_levels.c.low_stock_threshold >= AVAILABLE),
        res.STOCK_STATUS_LOW_STOCK,
    ),
    else_=res.STOCK_STATUS_IN_STOCK,
)
LEVEL_COLUMNS = (
    stock_levels.c.location_id,
    stock_levels.c.item_sku,
    stock_levels.c.on_hand,
    stock_levels.c.reserved,
    stock_levels.c.safety_stock,
    stock_levels.c.low_stock_threshold,
    stock_levels.c.version,
    stock_levels.c.update_time,
)


async def level(session: AsyncSession, location_id: str, sku: str, *, lock: bool = False) -> AnyRow | None:
    query = select(*LEVEL_COLUMNS).where(
        stock_levels.c.location_id == location_id, stock_levels.c.item_sku == sku
    )
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def levels(session: AsyncSession, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], AnyRow]:
    """Current levels of (location, item) pairs (absent pairs never held stock)."""
    if not pairs:
        return {}
    rows = await session.execute(
        select(*LEVEL_COLUMNS).where(
            tuple_(stock_levels.c.location_id, stock_levels.c.item_sku).in_(list(pairs))
        )
    )
    return {(r.location_id, r.item_sku): r for r in rows}


# Arrays, not IN lists: one statement text whatever the counts (asyncpg prepares each text).
_ITEMS_WITH_LEVELS = (
    select(items.c.sku, items.c.active, *LEVEL_COLUMNS)
    .select_from(
        items.outerjoin(
            stock_levels,
            and_(
                stock_levels.c.item_sku == items.c.sku,
                stock_levels.c.location_id == any_(bindparam("locations", type_=ARRAY(Text))),
            ),
        )
    )
    .where(items.c.sku == any_(bindparam("skus", type_=ARRAY(Text))))
)


async def items_with_levels(
    session: Reader, skus: Sequence[str], location_ids: Sequence[str]
) -> tuple[dict[str, bool], dict[tuple[str, str], AnyRow]]:
    """Whether each existing item is active, and its levels at some locations, in one query."""
    rows = await session.execute(
        _ITEMS_WITH_LEVELS,
        {"skus": list(dict.fromkeys(skus)), "locations": list(dict.fromkeys(location_ids))},
    )
    active: dict[str, bool] = {}
    found: dict[tuple[str, str], AnyRow] = {}
    for row in rows:
        active[row.sku] = row.active
        if row.location_id is not None:
            found[(row.location_id, row.item_sku)] = row
    return active, found


async def add_on_hand(
    session: AsyncSession,
    location_id: str,
    sku: str,
    delta: int,
    now: datetime,
    *,
    expected_version: int | None,
) -> AnyRow | None:
    """``on_hand += delta``, creating the level if needed; None when ``expected_version`` is stale.

    One statement (an upsert), so concurrent till sales commute without read-modify-write.
    """
    if expected_version is not None:
        return (
            await session.execute(
                update(stock_levels)
                .where(
                    stock_levels.c.location_id == location_id,
                    stock_levels.c.item_sku == sku,
                    stock_levels.c.version == expected_version,
                )
                .values(
                    on_hand=stock_levels.c.on_hand + delta,
                    version=stock_levels.c.version + 1,
                    update_time=now,
                )
                .returning(*LEVEL_COLUMNS)
            )
        ).first()
    stmt = insert(stock_levels).values(
        location_id=location_id, item_sku=sku, on_hand=delta, reserved=0, version=1, update_time=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[stock_levels.c.location_id, stock_levels.c.item_sku],
        set_={
            "on_hand": stock_levels.c.on_hand + delta,
            "version": stock_levels.c.version + 1,
            "update_time": now,
        },
    )
    return (await session.execute(stmt.returning(*LEVEL_COLUMNS))).first()


async def ensure_level(session: AsyncSession, location_id: str, sku: str, now: datetime) -> None:
    """Create an empty level row if there is none (so it can be locked)."""
    await session.execute(
        insert(stock_levels)
        .values(location_id=location_id, item_sku=sku, on_hand=0, reserved=0, version=1, update_time=now)
        .on_conflict_do_nothing()
    )


async def reserve_guarded(
    session: AsyncSession, location_id: str, sku: str, quantity: int, now: datetime
) -> AnyRow | None:
    """The oversell guard: take ``quantity`` only if that many are available, in one statement."""
    return (
        await session.execute(
            update(stock_levels)
            .where(
                stock_levels.c.location_id == location_id,
                stock_levels.c.item_sku == sku,
                stock_levels.c.on_hand - stock_levels.c.reserved - stock_levels.c.safety_stock >= quantity,
            )
            .values(
                reserved=stock_levels.c.reserved + quantity,
                version=stock_levels.c.version + 1,
                update_time=now,
            )
            .returning(*LEVEL_COLUMNS)
        )
    ).first()


async def move(
    session: AsyncSession, location_id: str, sku: str, on_hand_delta: int, reserved_delta: int, now: datetime
) -> AnyRow:
    """Apply deltas to an existing level (commit, release, expiry of what a reservation holds)."""
    row = (
        await session.execute(
            update(stock_levels)
            .where(stock_levels.c.location_id == location_id, stock_levels.c.item_sku == sku)
            .values(
                on_hand=stock_levels.c.on_hand + on_hand_delta,
                reserved=stock_levels.c.reserved + reserved_delta,
                version=stock_levels.c.version + 1,
                update_time=now,
            )
            .returning(*LEVEL_COLUMNS)
        )
    ).first()
    if row is None:  # a reservation's level always exists: it was created by the reservation
        raise LookupError(f"stock level {location_id}/{sku} vanished")
    return row


async def update_level_settings(
    session: AsyncSession,
    location_id: str,
    sku: str,
    values: Mapping[str, int],
    now: datetime,
    *,
    expected_version: int | None,
) -> AnyRow | None:
    """Change safety stock / threshold (creating the level); None when the version is stale."""
    if expected_version is not None:
        return (
            await session.execute(
                update(stock_levels)
                .where(
                    stock_levels.c.location_id == location_id,
                    stock_levels.c.item_sku == sku,
                    stock_levels.c.version == expected_version,
                )
                .values(**values, version=stock_levels.c.version + 1, update_time=now)
                .returning(*LEVEL_COLUMNS)
            )
        ).first()
    stmt = insert(stock_levels).values(
        location_id=location_id, item_sku=sku, on_hand=0, reserved=0, version=1, update_time=now, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[stock_levels.c.location_id, stock_levels.c.item_sku],
        set_={**values, "version": stock_levels.c.version + 1, "update_time": now},
    )
    return (await session.execute(stmt.returning(*LEVEL_COLUMNS))).first()


# ---------------------------------------------------------------------------------------------
# Subscriptions fired by stock coming back
# ---------------------------------------------------------------------------------------------


async def fire_subscriptions(
    session: AsyncSession, back: Sequence[tuple[str, str]], now: datetime
) -> list[AnyRow]:
    """Mark ACTIVE subscriptions satisfied by (location, item) pairs back in stock as FIRED.

    A subscription for "any location" is satisfied by a location that ships or offers pickup.
    Rows are locked in id order in one statement, so concurrent firings cannot deadlock, and the
    ``state = ACTIVE`` condition (re-checked after a wait) makes each subscription fire once.
    """
    if not back:
        return []
    pairs = [(loc, sku) for loc, sku in back]
    sub = stock_subscriptions
    matches = (
        select(sub.c.id, locations.c.id.label("at"))
        .select_from(sub.join(locations, locations.c.id == func.coalesce(sub.c.location_id, locations.c.id)))
        .where(
            sub.c.state == res.STOCK_SUBSCRIPTION_STATE_ACTIVE,
            tuple_(locations.c.id, sub.c.item_sku).in_(pairs),
            or_(
                sub.c.location_id.is_not(None),
                locations.c.ship_from.is_(True),
                locations.c.pickup_enabled.is_(True),
            ),
        )
        .order_by(sub.c.id, locations.c.id)
    )
    candidates: dict[str, str] = {}
    for row in await session.execute(matches):
        candidates.setdefault(row.id, row.at)  # one firing per subscription (first location by id)
    if not candidates:
        return []
    locked = (
        select(sub.c.id)
        .where(sub.c.id.in_(sorted(candidates)), sub.c.state == res.STOCK_SUBSCRIPTION_STATE_ACTIVE)
        .order_by(sub.c.id)
        .with_for_update()
    )
    ids = [r.id for r in await session.execute(locked)]
    fired: list[AnyRow] = []
    for sub_id in ids:
        updated: AnyRow | None = (
            await session.execute(
                update(sub)
                .where(sub.c.id == sub_id, sub.c.state == res.STOCK_SUBSCRIPTION_STATE_ACTIVE)
                .values(
                    state=res.STOCK_SUBSCRIPTION_STATE_FIRED, fired_location=candidates[sub_id], end_time=now
                )
                .returning(*sub.c)
            )
        ).first()
        if updated is not None:
            fired.append(updated)
    return fired
