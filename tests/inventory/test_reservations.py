"""Reservations: allocation strategies, errors, lifecycle, listing and store scopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

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
    uid,
    violations,
)


def _allocations(r: res.Reservation) -> list[list[tuple[str, int]]]:
    return [[(a.location, a.quantity) for a in line.allocations] for line in r.lines]


async def test_allocation_strategies(api: Api) -> None:
    item = await api.item()
    w1, w2 = await api.warehouse(priority=1), await api.warehouse(priority=2)
    await api.receive(w1.name, item.name, 3)
    await api.receive(w2.name, item.name, 10)
    by_priority = await api.reserve((item.name, 2, ""))
    assert by_priority.strategy == res.ALLOCATION_STRATEGY_PRIORITY
    assert _allocations(by_priority) == [[(w1.name, 2)]]
    whole = await api.reserve((item.name, 5, ""))  # w1 has 1 left: the whole line goes to w2
    assert _allocations(whole) == [[(w2.name, 5)]]
    most = await api.reserve((item.name, 1, ""), strategy=res.ALLOCATION_STRATEGY_MOST_STOCK)
    assert _allocations(most) == [[(w2.name, 1)]]
    split = await api.reserve((item.name, 5, ""), allow_split=True)
    assert _allocations(split) == [[(w1.name, 1), (w2.name, 4)]]
    for loc, expected in ((w1, 3), (w2, 10)):
        assert (await api.level(loc.name, item.name)).reserved == expected


async def test_nearest_strategy_and_pickup_eligibility(api: Api) -> None:
    item = await api.item()
    here = address_pb2.GeoPoint(latitude=45.0, longitude=25.0)
    close = await api.store(lat=45.001, lng=25.001, priority=9)
    farther = await api.store(lat=45.05, lng=25.05, priority=1)
    no_pickup = await api.store(lat=45.0001, lng=25.0001, pickup=False)
    wh = await api.warehouse(priority=0)
    for loc in (close, farther, no_pickup, wh):
        await api.receive(loc.name, item.name, 2)
    nearest = await api.reserve(
        (item.name, 2, ""), strategy=res.ALLOCATION_STRATEGY_NEAREST, near=here, pickup=True
    )
    assert _allocations(nearest) == [[(close.name, 2)]]
    assert nearest.near == here
    then = await api.reserve(
        (item.name, 2, ""), strategy=res.ALLOCATION_STRATEGY_NEAREST, near=here, pickup=True
    )
    assert _allocations(then) == [[(farther.name, 2)]]
    # Shipping draws only on ship-from locations: the warehouse, not the stores.
    shipped = await api.reserve((item.name, 2, ""))
    assert _allocations(shipped) == [[(wh.name, 2)]]
    none_left = await rpc_error(
        api.reserve((item.name, 1, ""), strategy=res.ALLOCATION_STRATEGY_NEAREST, near=here, pickup=True)
    )
    assert reason(none_left) == "INSUFFICIENT_STOCK"
    # A line that names its location is not subject to the pickup rule.
    fixed = await api.reserve((item.name, 2, no_pickup.name), pickup=True)
    assert _allocations(fixed) == [[(no_pickup.name, 2)]]


async def test_insufficient_stock_lists_every_short_line_and_reserves_nothing(api: Api, db: Database) -> None:
    a, b, c = await api.item(), await api.item(), await api.item()
    store = await api.store()
    await api.receive(store.name, a.name, 1)
    await api.receive(store.name, b.name, 10)
    err = await rpc_error(
        api.reserve((a.name, 3, store.name), (b.name, 2, store.name), (c.name, 1, store.name))
    )
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = details(err)["ErrorInfo"]
    assert (info.reason, info.domain) == ("INSUFFICIENT_STOCK", "omni.inventory")
    assert dict(info.metadata) == {
        "item": a.name,
        "line_index": "0",
        "requested": "3",
        "available": "1",
        "location": store.name,
    }
    failure = details(err)["PreconditionFailure"]
    assert [(v.type, v.subject) for v in failure.violations] == [
        ("INSUFFICIENT_STOCK", "lines[0]"),
        ("INSUFFICIENT_STOCK", "lines[2]"),
    ]
    assert "short by 2" in failure.violations[0].description
    assert (await api.level(store.name, b.name)).reserved == 0
    books = await ledger_books(db, store.name[10:], b.name[6:])
    assert books["moved_reserved"] == 0


async def test_reservation_errors(api: Api) -> None:
    item, inactive = await api.item(), await api.item(active=False)
    store = await api.store()
    await api.receive(store.name, inactive.name, 5)
    err = await rpc_error(api.reserve((inactive.name, 1, store.name)))
    assert (err.code(), reason(err)) == (grpc.StatusCode.FAILED_PRECONDITION, "ITEM_INACTIVE")
    assert (await rpc_error(api.reserve(("items/NOPE", 1, store.name)))).code() is grpc.StatusCode.NOT_FOUND
    assert (
        await rpc_error(api.reserve((item.name, 1, "locations/nowhere")))
    ).code() is grpc.StatusCode.NOT_FOUND

    def create(reservation: res.Reservation, request_id: str | None = None) -> object:
        return api.CreateReservation(
            svc.CreateReservationRequest(
                reservation=reservation, request_id=rid() if request_id is None else request_id
            )
        )

    past = timestamp_pb2.Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    cases = [
        (res.Reservation(), "", {"reservation.lines", "request_id"}),
        (
            res.Reservation(
                lines=[
                    res.ReservationLine(item=item.name, quantity=0, location=store.name),
                    res.ReservationLine(item=item.name, quantity=1, location=store.name),
                    res.ReservationLine(item="bad", quantity=1, location="bad"),
                ]
            ),
            None,
            {
                "reservation.lines[0].quantity",
                "reservation.lines[1]",
                "reservation.lines[2].item",
                "reservation.lines[2].location",
            },
        ),
        (
            res.Reservation(
                lines=[res.ReservationLine(item=item.name, quantity=1)],
                strategy=res.ALLOCATION_STRATEGY_FIXED_LOCATION,
            ),
            None,
            {"reservation.lines"},
        ),
        (
            res.Reservation(
                lines=[res.ReservationLine(item=item.name, quantity=1)],
                strategy=res.ALLOCATION_STRATEGY_NEAREST,
            ),
            None,
            {"reservation.near"},
        ),
        (
            res.Reservation(lines=[res.ReservationLine(item=item.name, quantity=1)], expire_time=past),
            None,
            {"reservation.expire_time"},
        ),
        (
            res.Reservation(
                lines=[res.ReservationLine(item=item.name, quantity=1)],
                ttl=duration_pb2.Duration(seconds=15 * 86400),
            ),
            None,
            {"reservation.ttl"},
        ),
        (
            res.Reservation(
                lines=[
                    res.ReservationLine(
                        item=item.name,
                        quantity=1,
                        allocations=[res.Allocation(location=store.name, quantity=1)],
                    )
                ],
                near=address_pb2.GeoPoint(latitude=100, longitude=0),
            ),
            "nope",
            {"reservation.lines[0].allocations", "reservation.near", "request_id"},
        ),
    ]
    for reservation, request_id, fields in cases:
        assert violations(await rpc_error(create(reservation, request_id))) == fields  # type: ignore[arg-type]


async def test_commit_release_and_extend(api: Api, db: Database) -> None:
    item, store = await api.item(), await api.store()
    await api.receive(store.name, item.name, 10)

    held = await api.reserve((item.name, 4, store.name), owner="customers/c1/orders/o1")
    assert held.expire_time.ToDatetime(tzinfo=UTC) - held.create_time.ToDatetime(tzinfo=UTC) == timedelta(
        minutes=15
    )
    extended = await api.ExtendReservation(
        svc.ExtendReservationRequest(
            name=held.name, ttl=duration_pb2.Duration(seconds=3 * 86400), etag=held.etag
        )
    )
    assert extended.expire_time.ToDatetime() > held.expire_time.ToDatetime() + timedelta(days=2)
    stale = await rpc_error(
        api.ExtendReservation(
            svc.ExtendReservationRequest(
                name=held.name, ttl=duration_pb2.Duration(seconds=60), etag=held.etag
            )
        )
    )
    assert stale.code() is grpc.StatusCode.ABORTED
    assert details(stale)["ErrorInfo"].metadata["current_etag"] == extended.etag
    too_late = timestamp_pb2.Timestamp()
    too_late.FromDatetime(datetime.now(UTC) + timedelta(days=14, minutes=5))
    late = await rpc_error(
        api.ExtendReservation(svc.ExtendReservationRequest(name=held.name, expire_time=too_late))
    )
    assert (late.code(), reason(late)) == (grpc.StatusCode.FAILED_PRECONDITION, "EXPIRY_TOO_LATE")

    commit = svc.CommitReservationRequest(name=held.name, reference="R-1", request_id=rid())
    committed = await api.CommitReservation(commit)
    assert committed.state == res.RESERVATION_STATE_COMMITTED
    assert await api.CommitReservation(commit) == committed  # retried
    assert (
        await api.CommitReservation(svc.CommitReservationRequest(name=held.name))
    ).state == res.RESERVATION_STATE_COMMITTED
    level = await api.level(store.name, item.name)
    assert (level.on_hand, level.reserved, level.available) == (6, 0, 6)
    cannot = await rpc_error(api.ReleaseReservation(svc.ReleaseReservationRequest(name=held.name)))
    assert (cannot.code(), reason(cannot)) == (grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_NOT_ACTIVE")
    assert details(cannot)["ErrorInfo"].metadata["state"] == "RESERVATION_STATE_COMMITTED"
    no_extend = await rpc_error(
        api.ExtendReservation(
            svc.ExtendReservationRequest(name=held.name, ttl=duration_pb2.Duration(seconds=60))
        )
    )
    assert reason(no_extend) == "RESERVATION_NOT_ACTIVE"

    other = await api.reserve((item.name, 6, store.name))
    released = await api.ReleaseReservation(
        svc.ReleaseReservationRequest(name=other.name, reason="order cancelled")
    )
    assert (released.state, released.release_reason) == (res.RESERVATION_STATE_RELEASED, "order cancelled")
    assert (await api.ReleaseReservation(svc.ReleaseReservationRequest(name=other.name))) == released
    again = await rpc_error(api.CommitReservation(svc.CommitReservationRequest(name=other.name)))
    assert reason(again) == "RESERVATION_NOT_ACTIVE"
    assert (await api.level(store.name, item.name)).available == 6

    movements = await api.ListStockMovements(
        svc.ListStockMovementsRequest(parent=level.name, filter=f'reservation = "{held.name}"')
    )
    assert [(m.kind, m.on_hand_delta, m.reserved_delta, m.reference) for m in movements.stock_movements] == [
        (res.MOVEMENT_KIND_RESERVATION_COMMIT, -4, -4, "R-1"),
        (res.MOVEMENT_KIND_RESERVATION, 0, 4, ""),
    ]
    books = await ledger_books(db, store.name[10:], item.name[6:])
    assert (
        (books["on_hand"], books["reserved"]) == (books["moved_on_hand"], books["moved_reserved"]) == (6, 0)
    )

    created = [
        events_pb2.ReservationCreatedEvent.FromString(p)
        for p in await outbox_events(db, "omni.inventory.v1.ReservationCreatedEvent")
    ]
    assert held.name in [e.reservation.name for e in created]
    committed_events = [
        events_pb2.ReservationCommittedEvent.FromString(p)
        for p in await outbox_events(db, "omni.inventory.v1.ReservationCommittedEvent")
    ]
    assert [e.reservation.name for e in committed_events].count(held.name) == 1
    released_events = [
        events_pb2.ReservationReleasedEvent.FromString(p)
        for p in await outbox_events(db, "omni.inventory.v1.ReservationReleasedEvent")
    ]
    assert [e.reservation.release_reason for e in released_events if e.reservation.name == other.name] == [
        "order cancelled"
    ]

    for call in (
        api.GetReservation(svc.GetReservationRequest(name="reservations/none")),
        api.CommitReservation(svc.CommitReservationRequest(name="reservations/none")),
        api.ReleaseReservation(svc.ReleaseReservationRequest(name="reservations/none")),
    ):
        assert (await rpc_error(call)).code() is grpc.StatusCode.NOT_FOUND
    assert violations(await rpc_error(api.ExtendReservation(svc.ExtendReservationRequest(name="x")))) == {
        "name",
        "expire_time",
    }


async def test_list_reservations(api: Api) -> None:
    a, b = await api.item(), await api.item()
    s1, s2 = await api.store(), await api.store()
    for loc in (s1, s2):
        await api.receive(loc.name, a.name, 10)
        await api.receive(loc.name, b.name, 10)
    owner = f"customers/{uid('c')}/cart"
    r1 = await api.reserve((a.name, 1, s1.name), owner=owner)
    r2 = await api.reserve((b.name, 1, s2.name), owner=owner)
    r3 = await api.reserve((a.name, 1, s2.name), (b.name, 1, s1.name), owner=owner)
    await api.ReleaseReservation(svc.ReleaseReservationRequest(name=r2.name))

    async def names(filter_: str, **kw: object) -> list[str]:
        page = await api.ListReservations(
            svc.ListReservationsRequest(filter=f'owner = "{owner}"' + filter_, **kw)
        )  # type: ignore[arg-type]
        return [r.name for r in page.reservations]

    assert await names("") == [r3.name, r2.name, r1.name]
    assert await names("", order_by="create_time") == [r1.name, r2.name, r3.name]
    assert await names(" AND state = RESERVATION_STATE_ACTIVE") == [r3.name, r1.name]
    assert await names(f' AND lines.item = "{a.name}"') == [r3.name, r1.name]
    assert await names(f' AND lines.allocations.location = "{s2.name}"') == [r3.name, r2.name]
    assert await names(f' AND lines.allocations.location != "{s2.name}"') == [r1.name]
    first = await api.ListReservations(svc.ListReservationsRequest(filter=f'owner = "{owner}"', page_size=2))
    second = await api.ListReservations(
        svc.ListReservationsRequest(
            filter=f'owner = "{owner}"', page_size=2, page_token=first.next_page_token
        )
    )
    assert [r.name for r in [*first.reservations, *second.reservations]] == [r3.name, r2.name, r1.name]
    assert violations(
        await rpc_error(api.ListReservations(svc.ListReservationsRequest(filter="state = ACTIVE")))
    ) == {"filter"}
    assert violations(
        await rpc_error(api.ListReservations(svc.ListReservationsRequest(order_by="owner")))
    ) == {"order_by"}


async def test_store_associates_reserve_only_at_their_store(as_role, api: Api) -> None:  # type: ignore[no-untyped-def]
    item = await api.item()
    mine, other = await api.store(), await api.store()
    for loc in (mine, other):
        await api.receive(loc.name, item.name, 5)
    associate = as_role("staffMembers/a2", "store_associate", store=mine.name)
    ours = await associate.reserve((item.name, 1, mine.name))
    theirs = await api.reserve((item.name, 1, other.name))
    err = await rpc_error(associate.reserve((item.name, 1, other.name)))
    assert (err.code(), reason(err)) == (grpc.StatusCode.PERMISSION_DENIED, "STORE_SCOPE")
    assert violations(await rpc_error(associate.reserve((item.name, 1, "")))) == {
        "reservation.lines[0].location"
    }
    assert (await associate.GetReservation(svc.GetReservationRequest(name=ours.name))).name == ours.name
    for call in (
        associate.GetReservation(svc.GetReservationRequest(name=theirs.name)),
        associate.CommitReservation(svc.CommitReservationRequest(name=theirs.name)),
    ):
        assert reason(await rpc_error(call)) == "STORE_SCOPE"
    listed = await associate.ListReservations(svc.ListReservationsRequest(page_size=1000))
    assert ours.name in [r.name for r in listed.reservations]
    assert theirs.name not in [r.name for r in listed.reservations]
    assert (await associate.CommitReservation(svc.CommitReservationRequest(name=ours.name))).state == (
        res.RESERVATION_STATE_COMMITTED
    )
    customer = as_role("customers/c1", "customer")
    assert reason(await rpc_error(customer.reserve((item.name, 1, mine.name)))) == "MISSING_PERMISSION"
