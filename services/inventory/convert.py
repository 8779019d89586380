"""Rows ↔ protobuf resources, in one place so every RPC and event shows a resource the same way."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import json_format

from omni.inventory.v1 import resources_pb2 as res
from omni.type.v1 import address_pb2, channel_pb2, money_pb2
from omni_runtime.timestamps import to_proto as ts
from services.inventory.domain import hours as hours_rules
from services.inventory.domain.stock import Quantities

ITEM = "items/{item}"
LOCATION = "locations/{location}"
STOCK_LEVEL = "locations/{location}/stockLevels/{item}"
MOVEMENT = "locations/{location}/stockLevels/{item}/movements/{movement}"
RESERVATION = "reservations/{reservation}"
SUBSCRIPTION = "stockSubscriptions/{stock_subscription}"
CUSTOMER = "customers/{customer}"


def item_name(sku: str) -> str:
    return f"items/{sku}"


def location_name(location_id: str) -> str:
    return f"locations/{location_id}"


def level_name(location_id: str, sku: str) -> str:
    return f"locations/{location_id}/stockLevels/{sku}"


def movement_name(location_id: str, sku: str, movement_id: str) -> str:
    return f"locations/{location_id}/stockLevels/{sku}/movements/{movement_id}"


def reservation_name(reservation_id: str) -> str:
    return f"reservations/{reservation_id}"


def subscription_name(subscription_id: str) -> str:
    return f"stockSubscriptions/{subscription_id}"


def etag(version: int) -> str:
    """AIP-154 etag of a row version (weak: it names a version, not a byte representation)."""
    return f'W/"{version}"'


def version_of(tag: str) -> int | None:
    """The version an etag names; None for something this server never issued."""
    if tag.startswith('W/"') and tag.endswith('"') and tag[3:-1].isdigit():
        return int(tag[3:-1])
    return None


def channel(row: Any, prefix: str = "channel") -> channel_pb2.ChannelContext:
    return channel_pb2.ChannelContext(
        channel=getattr(row, prefix),
        store=getattr(row, f"{prefix}_store"),
        device=getattr(row, f"{prefix}_device"),
    )


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# --- items -----------------------------------------------------------------------------------


def prices_json(prices: Any) -> list[dict[str, Any]]:
    return [{"currency_code": p.currency_code, "minor_units": int(p.minor_units)} for p in prices]


def item(row: Any) -> res.Item:
    return res.Item(
        name=item_name(row.sku),
        title=row.title,
        description=row.description,
        attributes=dict(row.attributes or {}),
        prices=[
            money_pb2.Money(currency_code=p["currency_code"], minor_units=p["minor_units"])
            for p in row.prices
        ],
        active=row.active,
        etag=etag(row.version),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
    )


# --- locations -------------------------------------------------------------------------------


def address(data: Mapping[str, Any] | None) -> address_pb2.PostalAddress | None:
    if data is None:
        return None
    return json_format.ParseDict(dict(data), address_pb2.PostalAddress())


def opening_hours(data: Mapping[str, Any] | None) -> res.OpeningHours:
    if not data:
        return res.OpeningHours()
    return json_format.ParseDict(dict(data), res.OpeningHours())


def point(lat: float | None, lng: float | None) -> address_pb2.GeoPoint | None:
    if lat is None or lng is None:
        return None
    return address_pb2.GeoPoint(latitude=lat, longitude=lng)


def location(row: Any) -> res.Location:
    return res.Location(
        name=location_name(row.id),
        type=row.type,
        display_name=row.display_name,
        address=address(row.address),
        coordinates=point(row.latitude, row.longitude),
        opening_hours=opening_hours(row.opening_hours) if row.opening_hours else None,
        ship_from=row.ship_from,
        pickup_enabled=row.pickup_enabled,
        allocation_priority=row.allocation_priority,
        etag=etag(row.version),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
    )


def location_summary(row: Any, now: datetime, distance_m: float | None = None) -> res.LocationSummary:
    hours = opening_hours(row.opening_hours)
    summary = res.LocationSummary(
        location=location_name(row.id),
        display_name=row.display_name,
        type=row.type,
        pickup_enabled=row.pickup_enabled,
        open_now=hours_rules.is_open(hours, now),
        opening_hours_known=bool(hours.periods),
        address=address(row.address),
        coordinates=point(row.latitude, row.longitude),
    )
    if distance_m is not None:
        summary.distance_meters = round(distance_m)
    return summary


# --- stock -----------------------------------------------------------------------------------


def quantities(row: Any | None) -> Quantities:
    if row is None:
        return Quantities()
    return Quantities(row.on_hand, row.reserved, row.safety_stock, row.low_stock_threshold)


def stock_level(location_id: str, sku: str, row: Any | None) -> res.StockLevel:
    """A level; a pair that never held stock is all zeros with an empty etag (the contract)."""
    q = quantities(row)
    level = res.StockLevel(
        name=level_name(location_id, sku),
        item=item_name(sku),
        location=location_name(location_id),
        on_hand=q.on_hand,
        reserved=q.reserved,
        safety_stock=q.safety_stock,
        available=q.available,
        low_stock_threshold=q.low_stock_threshold,
        status=q.status,
    )
    if row is not None:
        level.etag = etag(row.version)
        level.update_time.FromDatetime(row.update_time)
    return level


def movement(row: Any) -> res.StockMovement:
    return res.StockMovement(
        name=movement_name(row.location_id, row.item_sku, row.id),
        kind=row.kind,
        on_hand_delta=row.on_hand_delta,
        reserved_delta=row.reserved_delta,
        on_hand_after=row.on_hand_after,
        reserved_after=row.reserved_after,
        reason=row.reason,
        request_id=row.request_id,
        reservation=reservation_name(row.reservation_id) if row.reservation_id else "",
        reference=row.reference,
        channel=channel(row),
        actor=row.actor,
        create_time=ts(row.create_time),
    )


# --- reservations ----------------------------------------------------------------------------


def lines_json(lines: list[tuple[str, int, str, list[tuple[str, int]]]]) -> list[dict[str, Any]]:
    """``[(sku, quantity, requested location id, [(location id, quantity)])]`` → stored JSON."""
    return [
        {"item": sku, "quantity": qty, "location": loc, "allocations": [[a, q] for a, q in parts]}
        for sku, qty, loc, parts in lines
    ]


def reservation(row: Any) -> res.Reservation:
    out = res.Reservation(
        name=reservation_name(row.id),
        strategy=row.strategy,
        allow_split=row.allow_split,
        pickup=row.pickup,
        state=row.state,
        owner=row.owner,
        release_reason=row.release_reason,
        etag=etag(row.version),
        expire_time=ts(row.expire_time),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
    )
    near = point(row.near_latitude, row.near_longitude)
    if near is not None:
        out.near.CopyFrom(near)
    for line in row.lines:
        out.lines.append(
            res.ReservationLine(
                item=item_name(line["item"]),
                quantity=line["quantity"],
                location=location_name(line["location"]) if line["location"] else "",
                allocations=[
                    res.Allocation(location=location_name(loc), quantity=qty)
                    for loc, qty in line["allocations"]
                ],
            )
        )
    return out


# --- subscriptions ---------------------------------------------------------------------------


def subscription(row: Any) -> res.StockSubscription:
    return res.StockSubscription(
        name=subscription_name(row.id),
        customer=row.customer,
        item=item_name(row.item_sku),
        location=location_name(row.location_id) if row.location_id else "",
        state=row.state,
        channel=channel(row),
        fired_location=location_name(row.fired_location) if row.fired_location else "",
        create_time=ts(row.create_time),
        end_time=ts(row.end_time),
    )
