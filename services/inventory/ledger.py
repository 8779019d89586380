"""The stock ledger: levels, adjustments (receipts, till sales, counts…), movements, availability.

An adjustment is one upsert of the level plus its movement and events, in one transaction.
Adjustments by delta commute (``on_hand = on_hand + delta`` is evaluated by PostgreSQL on the
current row), so tills need no etag and never lose a sale to a race; a stock count locks the
row first because its delta depends on what is there.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.db.idempotency import once
from omni_runtime.errors import Aborted, NotFound
from omni_runtime.listing import Field, Kind, Listing, ListQuery, by_name
from omni_runtime.timestamps import to_proto, utcnow
from services.inventory import convert, store
from services.inventory.catalogue import existing, require_found
from services.inventory.domain import DOMAIN, geo
from services.inventory.domain.stock import AdjustmentRule, Quantities
from services.inventory.txn import Unit

_LEVEL_NAME = (store.stock_levels.c.location_id, store.stock_levels.c.item_sku)
LEVELS = Listing(
    fields={
        "item": Field(Kind.STRING, sql=by_name(store.stock_levels.c.item_sku, "items/")),
        "location": Field(Kind.STRING, sql=by_name(store.stock_levels.c.location_id, "locations/")),
        "on_hand": Field(Kind.INT, sql=store.stock_levels.c.on_hand),
        "reserved": Field(Kind.INT, sql=store.stock_levels.c.reserved),
        "available": Field(Kind.INT, sql=store.AVAILABLE),
        "status": Field(Kind.ENUM, res.StockStatus, sql=store.STATUS),
    },
    order_by={
        "name": _LEVEL_NAME,
        "available": store.AVAILABLE,
        "on_hand": store.stock_levels.c.on_hand,
        "update_time": store.stock_levels.c.update_time,
    },
    default_order="name",
    tiebreak=_LEVEL_NAME,
    unique={"name"},
    domain=DOMAIN,
)
MOVEMENTS = Listing(
    fields={
        "kind": Field(Kind.ENUM, res.MovementKind, sql=store.stock_movements.c.kind),
        "create_time": Field(Kind.TIMESTAMP, sql=store.stock_movements.c.create_time),
        "reservation": Field(
            Kind.STRING, sql=by_name(store.stock_movements.c.reservation_id, "reservations/")
        ),
        "reference": Field(Kind.STRING, sql=store.stock_movements.c.reference),
        "request_id": Field(Kind.STRING, sql=store.stock_movements.c.request_id),
    },
    order_by={"create_time": store.stock_movements.c.create_time},
    default_order="create_time desc",
    tiebreak=[store.stock_movements.c.seq],
    domain=DOMAIN,
)


def _stale_level(current: store.AnyRow | None) -> Aborted:
    return Aborted(
        "the stock level changed since it was read",
        current_etag=convert.etag(current.version) if current is not None else "",
        domain=DOMAIN,
    )


# --- stock levels ----------------------------------------------------------------------------


async def get_stock_level(unit: Unit, location_id: str, sku: str) -> res.StockLevel:
    async with unit.db.transaction() as session:
        require_found([sku], [location_id], await existing(session, [sku], [location_id]))
        row = await store.level(session, location_id, sku)
    return convert.stock_level(location_id, sku, row)


async def list_stock_levels(unit: Unit, location_id: str, query: ListQuery) -> svc.ListStockLevelsResponse:
    statement = select(*store.stock_levels.c, store.AVAILABLE.label("available"))
    if location_id != "-":
        statement = statement.where(store.stock_levels.c.location_id == location_id)
    async with unit.db.transaction() as session:
        if location_id != "-":
            require_found([], [location_id], await existing(session, [], [location_id]))
        rows, token = await query.page(session, statement)
    return svc.ListStockLevelsResponse(
        stock_levels=[convert.stock_level(r.location_id, r.item_sku, r) for r in rows], next_page_token=token
    )


async def update_stock_level(
    unit: Unit, request: svc.UpdateStockLevelRequest, location_id: str, sku: str, fields: Sequence[str]
) -> res.StockLevel:
    async def work(session: AsyncSession) -> res.StockLevel:
        require_found([sku], [location_id], await existing(session, [sku], [location_id]))
        values = {f: getattr(request.stock_level, f) for f in fields}
        given = request.stock_level.etag
        expected = (convert.version_of(given) or -1) if given else None
        row = await store.update_level_settings(
            session, location_id, sku, values, utcnow(), expected_version=expected
        )
        if row is None:
            raise _stale_level(await store.level(session, location_id, sku))
        return convert.stock_level(location_id, sku, row)

    return await once(
        unit.db, "inventory.UpdateStockLevel", request.request_id, request, res.StockLevel, work
    )


async def adjust_stock(
    unit: Unit, request: svc.AdjustStockRequest, location_id: str, sku: str, rule: AdjustmentRule
) -> svc.AdjustStockResponse:
    async def work(session: AsyncSession) -> svc.AdjustStockResponse:
        now = utcnow()
        require_found([sku], [location_id], await existing(session, [sku], [location_id]))
        given = request.etag
        expected = (convert.version_of(given) or -1) if given else None
        if request.WhichOneof("change") == "on_hand_count":
            current = await store.level(session, location_id, sku, lock=True)
            if expected is not None and (current is None or current.version != expected):
                raise _stale_level(current)
            delta = request.on_hand_count - (current.on_hand if current is not None else 0)
            row = await store.add_on_hand(session, location_id, sku, delta, now, expected_version=None)
            if row is None:  # an upsert always returns its row
                raise LookupError(f"stock level {location_id}/{sku} was not written")
        else:
            delta = request.delta
            row = await store.add_on_hand(session, location_id, sku, delta, now, expected_version=expected)
            if row is None:
                raise _stale_level(await store.level(session, location_id, sku))
        journal = unit.journal(session, now, request.request_id)
        movement = journal.record(
            row, rule.kind, delta, 0, reason=request.reason_text, reference=request.reference
        )
        await journal.flush()
        return svc.AdjustStockResponse(
            stock_level=convert.stock_level(location_id, sku, row),
            movement=convert.movement(SimpleNamespace(**movement)),
        )

    return await once(
        unit.db, "inventory.AdjustStock", request.request_id, request, svc.AdjustStockResponse, work
    )


# --- movements -------------------------------------------------------------------------------


async def get_stock_movement(unit: Unit, location_id: str, sku: str, movement_id: str) -> res.StockMovement:
    m = store.stock_movements
    async with unit.db.transaction() as session:
        row = (
            await session.execute(
                select(m).where(m.c.id == movement_id, m.c.location_id == location_id, m.c.item_sku == sku)
            )
        ).first()
    if row is None:
        raise NotFound(convert.movement_name(location_id, sku, movement_id), domain=DOMAIN)
    return convert.movement(row)


async def list_stock_movements(
    unit: Unit, location_id: str, sku: str, query: ListQuery
) -> svc.ListStockMovementsResponse:
    m = store.stock_movements
    statement = select(m)
    if location_id != "-":
        statement = statement.where(m.c.location_id == location_id)
    if sku != "-":
        statement = statement.where(m.c.item_sku == sku)
    async with unit.db.transaction() as session:
        require_found(
            [sku] if sku != "-" else [],
            [location_id] if location_id != "-" else [],
            await existing(session, [sku] if sku != "-" else [], [location_id] if location_id != "-" else []),
        )
        rows, token = await query.page(session, statement)
    return svc.ListStockMovementsResponse(
        stock_movements=[convert.movement(r) for r in rows], next_page_token=token
    )


# --- availability ----------------------------------------------------------------------------


async def _candidate_locations(
    session: AsyncSession, request: svc.CheckAvailabilityRequest, location_ids: Sequence[str]
) -> list[tuple[Any, float | None]]:
    """The locations an availability question is about, in answer order, with distances."""
    loc = store.locations
    scope = request.WhichOneof("scope")
    chosen: list[tuple[Any, float | None]]
    if scope == "locations":
        by_id = {r.id: r for r in await session.execute(select(loc).where(loc.c.id.in_(list(location_ids))))}
        require_found([], location_ids, ({}, by_id))
        chosen = [(by_id[i], None) for i in location_ids]
    elif scope == "ship_from":
        shipping = await session.execute(
            select(loc).where(loc.c.ship_from.is_(True)).order_by(loc.c.allocation_priority, loc.c.id)
        )
        chosen = [(r, None) for r in shipping]
    else:
        point = request.near.point
        box = geo.bounding_box(point.latitude, point.longitude, request.near.radius_meters)
        # The stores inside the box, through the GiST index on their coordinates (a box over the
        # whole band of latitudes near a pole or across the antimeridian).
        corner = (box.min_lng, box.max_lng) if box.min_lng is not None else (-180.0, 180.0)
        inside = store.LOCATION_POINT.op("<@")(
            func.box(func.point(corner[0], box.min_lat), func.point(corner[1], box.max_lat))
        )
        found: list[tuple[Any, float | None]] = []
        near = select(loc).where(loc.c.type == res.LOCATION_TYPE_STORE, inside)
        for r in await session.execute(near):
            distance = geo.haversine_m(point.latitude, point.longitude, r.latitude, r.longitude)
            if distance <= request.near.radius_meters:
                found.append((r, distance))
        found.sort(key=lambda pair: (pair[1] or 0.0, pair[0].allocation_priority, pair[0].id))
        chosen = found
    if request.pickup_only:
        chosen = [(r, d) for r, d in chosen if r.pickup_enabled]
    return chosen


async def check_availability(
    unit: Unit, request: svc.CheckAvailabilityRequest, skus: Sequence[str], location_ids: Sequence[str]
) -> svc.CheckAvailabilityResponse:
    """Availability of many items at many locations in two reads, whatever the counts: the
    locations, then the items with their levels there (no transaction: each answers as of its
    start, and the answer carries ``read_time``)."""
    now = utcnow()
    async with unit.db.read() as session:
        chosen = await _candidate_locations(session, request, location_ids)
        active, levels = await store.items_with_levels(session, skus, [r.id for r, _ in chosen])
    require_found(skus, [], (active, {}))
    inactive = {sku for sku, is_active in active.items() if not is_active}

    def quantities(location_id: str, sku: str) -> Quantities:
        # An inactive item cannot be sold or reserved: it is available nowhere.
        if sku in inactive:
            return Quantities()
        return convert.quantities(levels.get((location_id, sku)))

    if request.WhichOneof("scope") == "near":
        wanted = []
        for row, distance in chosen:
            stocked = [quantities(row.id, sku).available > 0 for sku in skus]
            if all(stocked) if request.require_all_items else any(stocked):
                wanted.append((row, distance))
        chosen = wanted[: request.near.max_locations or 10]
    summaries = [convert.location_summary(row, now, distance) for row, distance in chosen]
    response = svc.CheckAvailabilityResponse(locations=summaries, read_time=to_proto(now))
    for sku in skus:
        entry = svc.ItemAvailability(item=convert.item_name(sku))
        for (row, _), summary in zip(chosen, summaries, strict=True):
            qty = quantities(row.id, sku)
            entry.locations.append(
                svc.LocationAvailability(location=summary, available=qty.available, status=qty.status)
            )
            entry.total_available += qty.available
        response.items.append(entry)
    return response
