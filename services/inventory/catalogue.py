"""Items and locations: the catalogue every channel sells from and the places that hold stock.

Updates lock the row, check the etag and write, all in one transaction, so a stale etag is
always reported as ABORTED with the current etag rather than as a silent overwrite.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.db.idempotency import once
from omni_runtime.errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from omni_runtime.listing import Field, Kind, Listing, ListQuery, by_name, compare
from omni_runtime.timestamps import utcnow
from omni_runtime.validation import Checker
from services.inventory import convert, store
from services.inventory.domain import DOMAIN
from services.inventory.domain.resources import ITEM_FIELDS, LOCATION_FIELDS, check_item, check_location
from services.inventory.txn import Unit

# --- list query definitions ------------------------------------------------------------------

ITEMS = Listing(
    fields={
        "name": Field(Kind.STRING, sql=by_name(store.items.c.sku, "items/")),
        "title": Field(Kind.STRING, sql=store.items.c.title),
        "active": Field(Kind.BOOL, sql=store.items.c.active),
        "update_time": Field(Kind.TIMESTAMP, sql=store.items.c.update_time),
    },
    prefixes={
        "attributes.": Field(
            Kind.STRING, sql=lambda c: compare(store.items.c.attributes[c.key].astext, c.op, c.value)
        )
    },
    order_by={
        "name": store.items.c.sku,
        "title": store.items.c.title,
        "update_time": store.items.c.update_time,
    },
    default_order="name",
    tiebreak=[store.items.c.sku],
    unique={"name"},
    domain=DOMAIN,
)
LOCATIONS = Listing(
    fields={
        "type": Field(Kind.ENUM, res.LocationType, sql=store.locations.c.type),
        "ship_from": Field(Kind.BOOL, sql=store.locations.c.ship_from),
        "pickup_enabled": Field(Kind.BOOL, sql=store.locations.c.pickup_enabled),
        "display_name": Field(Kind.STRING, sql=store.locations.c.display_name),
        "address.region_code": Field(Kind.STRING, sql=store.locations.c.address["region_code"].astext),
        "address.locality": Field(Kind.STRING, sql=store.locations.c.address["locality"].astext),
    },
    order_by={
        "name": store.locations.c.id,
        "display_name": store.locations.c.display_name,
        "allocation_priority": store.locations.c.allocation_priority,
    },
    default_order="name",
    tiebreak=[store.locations.c.id],
    unique={"name"},
    domain=DOMAIN,
)


def _stale(current_version: int | None, given: str) -> bool:
    """Whether a given etag (non-empty) does not name the current version."""
    return bool(given) and (current_version is None or convert.version_of(given) != current_version)


# --- items -----------------------------------------------------------------------------------


def _item_values(item: res.Item, fields: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields:
        if f == "title":
            values["title"] = item.title
        elif f == "description":
            values["description"] = item.description
        elif f == "attributes":
            values["attributes"] = dict(item.attributes)
        elif f == "prices":
            values["prices"] = convert.prices_json(item.prices)
        elif f == "active":
            values["active"] = item.active
    return values


def set_item_fields(item: res.Item) -> list[str]:
    """The fields set (non-default) in ``item``: what an empty update mask means for UpdateItem."""
    present = [f for f in ("title", "description", "active") if getattr(item, f)]
    if item.attributes:
        present.append("attributes")
    if item.prices:
        present.append("prices")
    return present


async def get_item(unit: Unit, sku: str) -> res.Item:
    async with unit.db.read() as session:
        row = (await session.execute(select(store.items).where(store.items.c.sku == sku))).first()
    if row is None:
        raise NotFound(convert.item_name(sku), domain=DOMAIN)
    return convert.item(row)


async def get_items(unit: Unit, skus: Sequence[str]) -> list[res.Item]:
    """Items in the order asked (one statement, whatever the count); NOT_FOUND naming the first
    missing one."""
    items = store.items
    async with unit.db.read() as session:
        rows = {
            row.sku: row
            for row in await session.execute(
                # An array, not an IN list: one statement text whatever the count (prepared once).
                select(items).where(
                    items.c.sku == any_(bindparam("skus", list(dict.fromkeys(skus)), ARRAY(Text)))
                )
            )
        }
    require_found(skus, [], (rows, {}))
    return [convert.item(rows[sku]) for sku in skus]


async def _insert_item(session: AsyncSession, sku: str, item: res.Item, now: datetime) -> store.AnyRow | None:
    return (
        await session.execute(
            insert(store.items)
            .values(sku=sku, version=1, create_time=now, update_time=now, **_item_values(item, ITEM_FIELDS))
            .on_conflict_do_nothing()
            .returning(*store.items.c)
        )
    ).first()


async def create_item(unit: Unit, request: svc.CreateItemRequest) -> res.Item:
    async def work(session: AsyncSession) -> res.Item:
        row = await _insert_item(session, request.item_id, request.item, utcnow())
        if row is None:
            raise AlreadyExists(
                f"{convert.item_name(request.item_id)} already exists",
                domain=DOMAIN,
                metadata={"resource": convert.item_name(request.item_id)},
            )
        return convert.item(row)

    return await once(unit.db, "inventory.CreateItem", request.request_id, request, res.Item, work)


async def _update_item(
    session: AsyncSession, row: store.AnyRow, item: res.Item, fields: Sequence[str], now: datetime
) -> store.AnyRow:
    updated = (
        await session.execute(
            update(store.items)
            .where(store.items.c.sku == row.sku)
            .values(**_item_values(item, fields), version=row.version + 1, update_time=now)
            .returning(*store.items.c)
        )
    ).one()
    return updated


async def update_item(
    unit: Unit, request: svc.UpdateItemRequest, sku: str, fields: Sequence[str]
) -> res.Item:
    async def work(session: AsyncSession) -> res.Item:
        row = (
            await session.execute(select(store.items).where(store.items.c.sku == sku).with_for_update())
        ).first()
        if row is None:
            raise NotFound(request.item.name, domain=DOMAIN)
        if _stale(row.version, request.item.etag):
            raise Aborted(
                f"{request.item.name} changed since it was read",
                current_etag=convert.etag(row.version),
                domain=DOMAIN,
            )
        if not fields:
            return convert.item(row)
        return convert.item(await _update_item(session, row, request.item, fields, utcnow()))

    return await once(unit.db, "inventory.UpdateItem", request.request_id, request, res.Item, work)


async def batch_upsert_items(
    unit: Unit, request: svc.BatchUpsertItemsRequest, fields: Sequence[str]
) -> svc.BatchUpsertItemsResponse:
    """All or nothing: existing rows are locked in SKU order, new ones inserted, any stale etag aborts."""

    async def work(session: AsyncSession) -> svc.BatchUpsertItemsResponse:
        now = utcnow()
        skus = [i.name.removeprefix("items/") for i in request.items]
        existing = {
            r.sku: r
            for r in await session.execute(
                select(store.items)
                .where(store.items.c.sku.in_(skus))
                .order_by(store.items.c.sku)
                .with_for_update()
            )
        }
        stale = [
            (i, existing.get(sku))
            for i, (sku, item) in enumerate(zip(skus, request.items, strict=True))
            if item.etag and _stale(existing[sku].version if sku in existing else None, item.etag)
        ]
        if stale:
            index, row = stale[0]
            raise Aborted(
                f"items[{index}] ({request.items[index].name}) changed since it was read",
                current_etag=convert.etag(row.version) if row is not None else "",
                domain=DOMAIN,
                metadata={"resource": request.items[index].name, "index": str(index)},
            )
        check = Checker()
        for i, (sku, item) in enumerate(zip(skus, request.items, strict=True)):
            if sku not in existing:
                check_item(check, item, f"items[{i}]")
        if check.violations:
            raise InvalidArgument(check.violations, domain=DOMAIN)
        out: dict[str, res.Item] = {}
        for sku in sorted(set(skus)):
            item = request.items[skus.index(sku)]
            if sku in existing:
                out[sku] = convert.item(await _update_item(session, existing[sku], item, fields, now))
                continue
            row = await _insert_item(session, sku, item, now)
            if row is None:
                raise Aborted(
                    f"{item.name} was created concurrently; retry the batch",
                    domain=DOMAIN,
                    metadata={"resource": item.name},
                )
            out[sku] = convert.item(row)
        return svc.BatchUpsertItemsResponse(items=[out[sku] for sku in skus])

    return await once(
        unit.db, "inventory.BatchUpsertItems", request.request_id, request, svc.BatchUpsertItemsResponse, work
    )


async def list_items(unit: Unit, query: ListQuery) -> svc.ListItemsResponse:
    async with unit.db.transaction() as session:
        rows, token = await query.page(session, select(store.items))
        total = await query.count(session, store.items)
    return svc.ListItemsResponse(
        items=[convert.item(r) for r in rows], total_size=total, next_page_token=token
    )


# --- locations -------------------------------------------------------------------------------


_MESSAGE_FIELDS = ("address", "coordinates", "opening_hours")


def _location_values(loc: res.Location, fields: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields:
        if f == "type":
            values["type"] = loc.type
        elif f == "display_name":
            values["display_name"] = loc.display_name
        elif f == "address":
            values["address"] = convert.to_json(loc.address) if loc.HasField("address") else None
        elif f == "coordinates":
            has = loc.HasField("coordinates")
            values["latitude"] = loc.coordinates.latitude if has else None
            values["longitude"] = loc.coordinates.longitude if has else None
        elif f == "opening_hours":
            hours = loc.opening_hours
            values["opening_hours"] = convert.to_json(hours) if hours.periods or hours.time_zone else None
        elif f in ("ship_from", "pickup_enabled", "allocation_priority"):
            values[f] = getattr(loc, f)
    return values


def set_location_fields(loc: res.Location) -> list[str]:
    """The fields set in ``loc``: what an empty update mask means for UpdateLocation."""
    present = [
        f
        for f in ("type", "display_name", "ship_from", "pickup_enabled", "allocation_priority")
        if getattr(loc, f)
    ]
    present += [f for f in ("address", "coordinates", "opening_hours") if loc.HasField(f)]
    return present


async def get_location(unit: Unit, location_id: str) -> res.Location:
    async with unit.db.transaction() as session:
        row = (
            await session.execute(select(store.locations).where(store.locations.c.id == location_id))
        ).first()
    if row is None:
        raise NotFound(convert.location_name(location_id), domain=DOMAIN)
    return convert.location(row)


async def create_location(unit: Unit, request: svc.CreateLocationRequest) -> res.Location:
    async def work(session: AsyncSession) -> res.Location:
        now = utcnow()
        location_id = request.location_id or uuid.uuid4().hex
        row = (
            await session.execute(
                insert(store.locations)
                .values(
                    id=location_id,
                    version=1,
                    create_time=now,
                    update_time=now,
                    **_location_values(request.location, LOCATION_FIELDS),
                )
                .on_conflict_do_nothing()
                .returning(*store.locations.c)
            )
        ).first()
        if row is None:
            name = convert.location_name(location_id)
            raise AlreadyExists(f"{name} already exists", domain=DOMAIN, metadata={"resource": name})
        return convert.location(row)

    return await once(unit.db, "inventory.CreateLocation", request.request_id, request, res.Location, work)


async def update_location(
    unit: Unit, request: svc.UpdateLocationRequest, location_id: str, fields: Sequence[str]
) -> res.Location:
    async def work(session: AsyncSession) -> res.Location:
        row = (
            await session.execute(
                select(store.locations).where(store.locations.c.id == location_id).with_for_update()
            )
        ).first()
        if row is None:
            raise NotFound(request.location.name, domain=DOMAIN)
        if _stale(row.version, request.location.etag):
            raise Aborted(
                f"{request.location.name} changed since it was read",
                current_etag=convert.etag(row.version),
                domain=DOMAIN,
            )
        merged = convert.location(row)
        for f in fields:
            if f in _MESSAGE_FIELDS:
                if request.location.HasField(f):  # type: ignore[arg-type]
                    getattr(merged, f).CopyFrom(getattr(request.location, f))
                else:
                    merged.ClearField(f)  # type: ignore[arg-type]
            else:
                setattr(merged, f, getattr(request.location, f))
        check = Checker()
        check_location(check, merged, "location")
        if check.violations:
            raise InvalidArgument(check.violations, domain=DOMAIN)
        if not fields:
            return merged
        updated = (
            await session.execute(
                update(store.locations)
                .where(store.locations.c.id == location_id)
                .values(**_location_values(merged, fields), version=row.version + 1, update_time=utcnow())
                .returning(*store.locations.c)
            )
        ).one()
        return convert.location(updated)

    return await once(unit.db, "inventory.UpdateLocation", request.request_id, request, res.Location, work)


async def list_locations(unit: Unit, query: ListQuery) -> svc.ListLocationsResponse:
    async with unit.db.transaction() as session:
        rows, token = await query.page(session, select(store.locations))
        total = await query.count(session, store.locations)
    return svc.ListLocationsResponse(
        locations=[convert.location(r) for r in rows], total_size=total, next_page_token=token
    )


async def existing(
    session: AsyncSession, skus: Sequence[str] = (), location_ids: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Items and locations by id, to report NOT_FOUND before touching the ledger."""
    found_items: dict[str, Any] = {}
    found_locations: dict[str, Any] = {}
    if skus:
        found_items = {
            r.sku: r
            for r in await session.execute(
                select(store.items.c.sku, store.items.c.title, store.items.c.active).where(
                    store.items.c.sku.in_(list(set(skus)))
                )
            )
        }
    if location_ids:
        found_locations = {
            r.id: r
            for r in await session.execute(
                select(store.locations).where(store.locations.c.id.in_(list(set(location_ids))))
            )
        }
    return found_items, found_locations


def require_found(
    skus: Sequence[str], location_ids: Sequence[str], found: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """NOT_FOUND naming the first missing location or item."""
    for location_id in location_ids:
        if location_id not in found[1]:
            raise NotFound(convert.location_name(location_id), domain=DOMAIN)
    for sku in skus:
        if sku not in found[0]:
            raise NotFound(convert.item_name(sku), domain=DOMAIN)
