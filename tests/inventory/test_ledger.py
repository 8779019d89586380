"""Stock levels, adjustments, movements, their events, availability, and store scopes."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import timeofday_pb2
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from omni.inventory.v1 import events_pb2
from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni.type.v1 import address_pb2
from omni_runtime.db.engine import Database
from tests.inventory.conftest import (
    Api,
    details,
    ledger_books,
    outbox_events,
    reason,
    rid,
    rpc_error,
    violations,
)


def _adjust(
    level: str, reason_: int, delta: int | None = None, count: int | None = None, **kw: object
) -> svc.AdjustStockRequest:
    request = svc.AdjustStockRequest(name=level, reason=reason_, request_id=kw.pop("request_id", rid()), **kw)  # type: ignore[arg-type]
    if delta is not None:
        request.delta = delta
    if count is not None:
        request.on_hand_count = count
    return request


async def test_a_level_that_never_held_stock_is_zeros(api: Api) -> None:
    item, store = await api.item(), await api.store()
    level = await api.level(store.name, item.name)
    assert (level.on_hand, level.reserved, level.available, level.etag) == (0, 0, 0, "")
    assert level.status == res.STOCK_STATUS_OUT_OF_STOCK
    assert (level.item, level.location) == (item.name, store.name)
    missing = await rpc_error(
        api.GetStockLevel(svc.GetStockLevelRequest(name=f"{store.name}/stockLevels/NOPE"))
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert details(missing)["ErrorInfo"].metadata["resource"] == "items/NOPE"
    assert violations(await rpc_error(api.GetStockLevel(svc.GetStockLevelRequest(name=store.name)))) == {
        "name"
    }


async def test_adjustments_move_on_hand_and_record_movements(api: Api, db: Database) -> None:
    item, store = await api.item(), await api.store()
    name = f"{store.name}/stockLevels/{item.name[6:]}"
    till = (("x-omni-channel", "store_pos"), ("x-omni-store", store.name), ("x-omni-device", "till-3"))
    received = await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_RECEIPT, 20, reference="DN-1"))
    assert received.stock_level.on_hand == 20
    assert received.movement.kind == res.MOVEMENT_KIND_RECEIPT
    sale_request = _adjust(name, res.ADJUSTMENT_REASON_SALE, -3, reference="R-778", reason_text="till sale")
    sold = await api.AdjustStock(sale_request, metadata=till)
    assert sold.stock_level.on_hand == 17
    assert sold.movement.channel.store == store.name
    assert sold.movement.channel.device == "till-3"
    assert sold.movement.actor == "serviceClients/web-backend"
    # The till retries the same sale: nothing is decremented twice.
    assert await api.AdjustStock(sale_request, metadata=till) == sold
    assert (await api.level(store.name, item.name)).on_hand == 17
    await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_RETURN, 1))
    await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_DAMAGE, -2))
    await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_TRANSFER_OUT, -4, reference="T-9"))
    await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_TRANSFER_IN, 1, reference="T-10"))
    counted = await api.AdjustStock(
        _adjust(name, res.ADJUSTMENT_REASON_CORRECTION, count=11, reason_text="weekly count")
    )
    assert counted.movement.on_hand_delta == -2
    assert counted.stock_level.on_hand == 11
    books = await ledger_books(db, store.name[10:], item.name[6:])
    assert books["on_hand"] == books["moved_on_hand"] == 11

    # Concurrent till sales commute: no lost update, no etag needed.
    await asyncio.gather(*(api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_SALE, -1)) for _ in range(11)))
    assert (await api.level(store.name, item.name)).on_hand == 0

    movements = await api.ListStockMovements(svc.ListStockMovementsRequest(parent=name, page_size=100))
    assert len(movements.stock_movements) == 18
    assert movements.stock_movements[-1].kind == res.MOVEMENT_KIND_RECEIPT  # newest first
    oldest_first = await api.ListStockMovements(
        svc.ListStockMovementsRequest(parent=name, order_by="create_time", page_size=3)
    )
    assert oldest_first.stock_movements[0].reference == "DN-1"
    one = await api.GetStockMovement(svc.GetStockMovementRequest(name=sold.movement.name))
    assert one == sold.movement
    sales = await api.ListStockMovements(
        svc.ListStockMovementsRequest(
            parent=f"{store.name}/stockLevels/-", filter='kind = MOVEMENT_KIND_SALE AND reference = "R-778"'
        )
    )
    assert [m.name for m in sales.stock_movements] == [sold.movement.name]
    everywhere = await api.ListStockMovements(
        svc.ListStockMovementsRequest(parent=f"locations/-/stockLevels/{item.name[6:]}", page_size=5)
    )
    assert len(everywhere.stock_movements) == 5 and everywhere.next_page_token
    rest = await api.ListStockMovements(
        svc.ListStockMovementsRequest(
            parent=f"locations/-/stockLevels/{item.name[6:]}",
            page_size=100,
            page_token=everywhere.next_page_token,
        )
    )
    seen = [m.name for m in [*everywhere.stock_movements, *rest.stock_movements]]
    assert len(seen) == len(set(seen)) == 18


async def test_a_till_sale_is_never_refused_and_may_oversell(api: Api, db: Database) -> None:
    item, store = await api.item(), await api.store()
    await api.receive(store.name, item.name, 2)
    await api.reserve((item.name, 2, store.name))
    name = f"{store.name}/stockLevels/{item.name[6:]}"
    sold = await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_SALE, -3))
    assert (sold.stock_level.on_hand, sold.stock_level.reserved, sold.stock_level.available) == (-1, 2, 0)
    assert sold.stock_level.status == res.STOCK_STATUS_OVERSOLD
    counted = await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_CORRECTION, count=5))
    assert counted.stock_level.status == res.STOCK_STATUS_IN_STOCK


async def test_adjustment_errors(api: Api) -> None:
    item, store = await api.item(), await api.store()
    name = f"{store.name}/stockLevels/{item.name[6:]}"
    cases = [
        (_adjust(name, res.ADJUSTMENT_REASON_RECEIPT, -1), {"delta"}),
        (_adjust(name, res.ADJUSTMENT_REASON_SALE, 2), {"delta"}),
        (_adjust(name, res.ADJUSTMENT_REASON_RECEIPT, 0), {"delta"}),
        (_adjust(name, res.ADJUSTMENT_REASON_RECEIPT, count=3), {"on_hand_count"}),
        (_adjust(name, res.ADJUSTMENT_REASON_CORRECTION, count=-1), {"on_hand_count"}),
        (_adjust(name, res.ADJUSTMENT_REASON_UNSPECIFIED, 1), {"reason"}),
        (_adjust(name, res.ADJUSTMENT_REASON_RECEIPT), {"delta"}),
        (_adjust("items/x", res.ADJUSTMENT_REASON_RECEIPT, 1, request_id=""), {"name", "request_id"}),
        (
            _adjust(name, res.ADJUSTMENT_REASON_RECEIPT, 1, reason_text="x" * 501, reference="y" * 201),
            {"reason_text", "reference"},
        ),
    ]
    for request, fields in cases:
        assert violations(await rpc_error(api.AdjustStock(request))) == fields, request
    missing = await rpc_error(
        api.AdjustStock(_adjust(f"locations/nowhere/stockLevels/{item.name[6:]}", 1, 1))
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    await api.receive(store.name, item.name, 1)
    stale = await rpc_error(api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_RECEIPT, 1, etag='W/"999"')))
    assert stale.code() is grpc.StatusCode.ABORTED
    current = details(stale)["ErrorInfo"].metadata["current_etag"]
    ok = await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_RECEIPT, 1, etag=current))
    assert ok.stock_level.on_hand == 2


async def test_stock_level_settings(api: Api) -> None:
    item, store = await api.item(), await api.store()
    created = await api.settings(store.name, item.name, safety_stock=2, low_stock_threshold=5)
    assert (created.safety_stock, created.low_stock_threshold, created.etag) == (2, 5, 'W/"1"')
    await api.receive(store.name, item.name, 10)
    level = await api.level(store.name, item.name)
    assert (level.available, level.status) == (8, res.STOCK_STATUS_IN_STOCK)
    stale = await rpc_error(
        api.UpdateStockLevel(
            svc.UpdateStockLevelRequest(
                stock_level=res.StockLevel(name=level.name, safety_stock=0, etag=created.etag)
            )
        )
    )
    assert stale.code() is grpc.StatusCode.ABORTED
    assert details(stale)["ErrorInfo"].metadata["current_etag"] == level.etag
    both = await api.UpdateStockLevel(
        svc.UpdateStockLevelRequest(
            stock_level=res.StockLevel(name=level.name, safety_stock=6, etag=level.etag)
        )
    )
    assert (both.safety_stock, both.low_stock_threshold, both.available, both.status) == (
        6,
        0,
        4,
        res.STOCK_STATUS_IN_STOCK,
    )
    bad = await rpc_error(
        api.UpdateStockLevel(
            svc.UpdateStockLevelRequest(
                stock_level=res.StockLevel(name=level.name, safety_stock=-1),
                update_mask=field_mask_pb2.FieldMask(paths=["safety_stock", "on_hand"]),
            )
        )
    )
    assert violations(bad) == {"stock_level.safety_stock", "update_mask.paths[1]"}


async def test_list_stock_levels(api: Api) -> None:
    item = await api.item()
    s1, s2, s3 = await api.store(), await api.store(), await api.store()
    await api.receive(s1.name, item.name, 5)
    await api.receive(s2.name, item.name, 9)
    await api.settings(s3.name, item.name, low_stock_threshold=3)  # a level without stock
    everywhere = await api.ListStockLevels(
        svc.ListStockLevelsRequest(
            parent="locations/-", filter=f'item = "{item.name}" AND available > 0', order_by="available desc"
        )
    )
    assert [lvl.location for lvl in everywhere.stock_levels] == [s2.name, s1.name]
    first = await api.ListStockLevels(
        svc.ListStockLevelsRequest(parent="locations/-", filter=f'item = "{item.name}"', page_size=2)
    )
    second = await api.ListStockLevels(
        svc.ListStockLevelsRequest(
            parent="locations/-",
            filter=f'item = "{item.name}"',
            page_size=2,
            page_token=first.next_page_token,
        )
    )
    assert len(first.stock_levels) + len(second.stock_levels) == 3 and not second.next_page_token
    out = await api.ListStockLevels(
        svc.ListStockLevelsRequest(parent=s3.name, filter="status = STOCK_STATUS_OUT_OF_STOCK")
    )
    assert [lvl.item for lvl in out.stock_levels] == [item.name]
    assert violations(
        await rpc_error(api.ListStockLevels(svc.ListStockLevelsRequest(parent="stores/x")))
    ) == {"parent"}
    assert violations(
        await rpc_error(
            api.ListStockLevels(svc.ListStockLevelsRequest(parent=s1.name, filter="available ~ 1"))
        )
    ) == {"filter"}
    gone = await rpc_error(api.ListStockLevels(svc.ListStockLevelsRequest(parent="locations/nowhere")))
    assert gone.code() is grpc.StatusCode.NOT_FOUND


async def test_movements_are_append_only_in_the_database(api: Api, db: Database) -> None:
    item, store = await api.item(), await api.store()
    await api.receive(store.name, item.name, 1)
    for statement in ("UPDATE stock_movements SET on_hand_delta = 100", "DELETE FROM stock_movements"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.transaction() as session:
                await session.execute(text(statement))


async def test_threshold_events_fire_once_per_crossing(api: Api, db: Database) -> None:
    item, store = await api.item(), await api.store()
    name = f"{store.name}/stockLevels/{item.name[6:]}"
    await api.settings(store.name, item.name, low_stock_threshold=3)
    await api.receive(store.name, item.name, 5)  # back in stock (0 → 5)
    await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_SALE, -2))  # 3: low
    await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_SALE, -1))  # 2: still low, no event
    await api.AdjustStock(_adjust(name, res.ADJUSTMENT_REASON_SALE, -2))  # 0: out
    await api.receive(store.name, item.name, 1)  # back

    def mine(kind: type, payloads: list[bytes]) -> list:  # type: ignore[type-arg]
        return [e for e in (kind.FromString(p) for p in payloads) if e.stock_level == name]

    low = mine(events_pb2.LowStockEvent, await outbox_events(db, "omni.inventory.v1.LowStockEvent"))
    assert [(e.available, e.low_stock_threshold) for e in low] == [(3, 3)]
    out = mine(events_pb2.OutOfStockEvent, await outbox_events(db, "omni.inventory.v1.OutOfStockEvent"))
    assert [(e.on_hand, e.oversold) for e in out] == [(0, False)]
    back = mine(events_pb2.BackInStockEvent, await outbox_events(db, "omni.inventory.v1.BackInStockEvent"))
    assert [e.available for e in back] == [5, 1]
    changed = mine(
        events_pb2.StockChangedEvent, await outbox_events(db, "omni.inventory.v1.StockChangedEvent")
    )
    assert [(e.old_on_hand, e.new_on_hand) for e in changed] == [(0, 5), (5, 3), (3, 2), (2, 0), (0, 1)]
    assert changed[1].kind == res.MOVEMENT_KIND_SALE and changed[1].status == res.STOCK_STATUS_LOW_STOCK
    assert all(e.movement.startswith(name + "/movements/") and e.etag for e in changed)


async def test_store_associates_adjust_only_their_own_store(as_role, api: Api) -> None:  # type: ignore[no-untyped-def]
    item, mine, other = await api.item(), await api.store(), await api.store()
    associate = as_role("staffMembers/a1", "store_associate", store=mine.name)
    ok = await associate.AdjustStock(
        _adjust(f"{mine.name}/stockLevels/{item.name[6:]}", res.ADJUSTMENT_REASON_RECEIPT, 4)
    )
    assert ok.movement.actor == "staffMembers/a1"
    await associate.GetStockMovement(svc.GetStockMovementRequest(name=ok.movement.name))
    await associate.ListStockMovements(svc.ListStockMovementsRequest(parent=f"{mine.name}/stockLevels/-"))
    for call in (
        associate.AdjustStock(
            _adjust(f"{other.name}/stockLevels/{item.name[6:]}", res.ADJUSTMENT_REASON_RECEIPT, 4)
        ),
        associate.ListStockMovements(svc.ListStockMovementsRequest(parent=f"{other.name}/stockLevels/-")),
        associate.ListStockMovements(svc.ListStockMovementsRequest(parent="locations/-/stockLevels/-")),
    ):
        err = await rpc_error(call)
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason(err) == "STORE_SCOPE"
    customer = as_role("customers/c9", "customer")
    denied = await rpc_error(customer.AdjustStock(_adjust(f"{mine.name}/stockLevels/{item.name[6:]}", 1, 1)))
    assert reason(denied) == "MISSING_PERMISSION"
    # Everyone signed in may read stock.
    assert (await customer.level(mine.name, item.name)).on_hand == 4


# --- availability ----------------------------------------------------------------------------

CENTRE = address_pb2.GeoPoint(latitude=46.7700, longitude=23.5900)


async def test_availability_near_a_point_is_ordered_by_distance(api: Api) -> None:
    a, b = await api.item(), await api.item()
    near = await api.store(lat=46.7710, lng=23.5910, display_name="Near")  # ~135 m
    mid = await api.store(lat=46.7800, lng=23.6000, display_name="Mid")  # ~1.4 km
    far = await api.store(lat=46.8500, lng=23.7000, display_name="Far")  # ~12 km
    empty = await api.store(lat=46.7705, lng=23.5905, display_name="Empty")
    no_pickup = await api.store(lat=46.7702, lng=23.5902, pickup=False)
    outside = await api.store(lat=47.5, lng=24.5, display_name="Outside")
    await api.receive(far.name, a.name, 7)
    await api.receive(mid.name, a.name, 2)
    await api.receive(mid.name, b.name, 1)
    await api.receive(near.name, b.name, 4)
    await api.receive(outside.name, a.name, 100)
    await api.receive(no_pickup.name, a.name, 1)
    area = svc.NearbyArea(point=CENTRE, radius_meters=20_000)

    answer = await api.CheckAvailability(
        svc.CheckAvailabilityRequest(items=[a.name, b.name], near=area, pickup_only=True)
    )
    assert [loc.location for loc in answer.locations] == [near.name, mid.name, far.name]
    distances = [loc.distance_meters for loc in answer.locations]
    assert distances == sorted(distances) and 100 < distances[0] < 200
    assert [i.item for i in answer.items] == [a.name, b.name]
    assert [(la.available, la.status) for la in answer.items[0].locations] == [
        (0, res.STOCK_STATUS_OUT_OF_STOCK),
        (2, res.STOCK_STATUS_IN_STOCK),
        (7, res.STOCK_STATUS_IN_STOCK),
    ]
    assert answer.items[0].total_available == 9 and answer.items[1].total_available == 5
    assert empty.name not in [loc.location for loc in answer.locations]

    both = await api.CheckAvailability(
        svc.CheckAvailabilityRequest(
            items=[a.name, b.name], near=area, pickup_only=True, require_all_items=True
        )
    )
    assert [loc.location for loc in both.locations] == [mid.name]
    nearest_two = await api.CheckAvailability(
        svc.CheckAvailabilityRequest(
            items=[a.name], near=svc.NearbyArea(point=CENTRE, radius_meters=20_000, max_locations=1)
        )
    )
    assert [loc.location for loc in nearest_two.locations] == [no_pickup.name]


async def test_availability_at_stores_and_online(api: Api) -> None:
    item, inactive = await api.item(), await api.item(active=False)
    hours = res.OpeningHours(
        time_zone="UTC",
        periods=[
            res.OpeningPeriod(
                day=d,  # type: ignore[arg-type]
                open_time=timeofday_pb2.TimeOfDay(hours=0),
                close_time=timeofday_pb2.TimeOfDay(hours=24),
            )
            for d in range(1, 8)
        ],
    )
    store = await api.store(opening_hours=hours)
    unknown_hours = await api.store()
    wh = await api.warehouse(priority=1)
    await api.receive(wh.name, item.name, 50)
    await api.receive(store.name, inactive.name, 5)
    at = await api.CheckAvailability(
        svc.CheckAvailabilityRequest(
            items=[item.name, inactive.name],
            locations=svc.LocationList(locations=[unknown_hours.name, store.name]),
        )
    )
    assert [loc.location for loc in at.locations] == [unknown_hours.name, store.name]
    assert (at.locations[1].open_now, at.locations[1].opening_hours_known) == (True, True)
    assert (at.locations[0].open_now, at.locations[0].opening_hours_known) == (False, False)
    assert not at.locations[0].HasField("distance_meters")
    assert at.items[1].total_available == 0  # an inactive item is available nowhere
    online = await api.CheckAvailability(svc.CheckAvailabilityRequest(items=[item.name], ship_from=True))
    assert wh.name in [loc.location for loc in online.locations]
    assert online.items[0].total_available >= 50


async def test_availability_errors(api: Api) -> None:
    item = await api.item()
    cases = [
        (svc.CheckAvailabilityRequest(items=[item.name]), {"locations"}),
        (svc.CheckAvailabilityRequest(ship_from=True), {"items"}),
        (
            svc.CheckAvailabilityRequest(items=[item.name, item.name, "x"], ship_from=True),
            {"items[1]", "items[2]"},
        ),
        (svc.CheckAvailabilityRequest(items=[item.name], ship_from=False), {"ship_from"}),
        (
            svc.CheckAvailabilityRequest(
                items=[item.name], near=svc.NearbyArea(radius_meters=300_000, max_locations=51)
            ),
            {"near.point", "near.radius_meters", "near.max_locations"},
        ),
        (
            svc.CheckAvailabilityRequest(items=[item.name], locations=svc.LocationList()),
            {"locations.locations"},
        ),
        (svc.CheckAvailabilityRequest(items=[f"items/S{i}" for i in range(101)], ship_from=True), {"items"}),
    ]
    for request, fields in cases:
        assert violations(await rpc_error(api.CheckAvailability(request))) == fields
    missing = await rpc_error(
        api.CheckAvailability(
            svc.CheckAvailabilityRequest(
                items=[item.name], locations=svc.LocationList(locations=["locations/zz"])
            )
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    unknown = await rpc_error(
        api.CheckAvailability(svc.CheckAvailabilityRequest(items=["items/NOPE"], ship_from=True))
    )
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
