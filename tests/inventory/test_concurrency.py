"""The oversell guard under real concurrency: many gRPC clients, one hot stock level.

Every call goes through a real socket and the full interceptor chain, from several channels
(separate HTTP/2 connections), so the server really handles them in parallel.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2

from omni.inventory.v1 import events_pb2, inventory_service_pb2_grpc
from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.db.engine import Database
from omni_runtime.testing.services import RunningService
from tests.inventory.conftest import Api, details, eventually, ledger_books, outbox_events, reason, rid

CHANNELS = 8


@pytest.fixture(scope="module")
async def callers(inventory: RunningService, api: Api) -> AsyncIterator[list[Api]]:
    """Callers on separate connections, all with the channel backend's token."""
    channels = [grpc.aio.insecure_channel(inventory.target) for _ in range(CHANNELS)]
    for channel in channels:
        await channel.channel_ready()
    yield [Api(inventory_service_pb2_grpc.InventoryServiceStub(ch), api.metadata) for ch in channels]
    for channel in channels:
        await channel.close()


async def test_120_concurrent_reservations_of_10_units_exactly_10_succeed(
    api: Api, callers: list[Api], db: Database
) -> None:
    item = await api.item()
    store = await api.store()
    await api.receive(store.name, item.name, 10)

    async def one(i: int) -> res.Reservation | grpc.aio.AioRpcError:
        try:
            return await callers[i % CHANNELS].reserve((item.name, 1, store.name))
        except grpc.aio.AioRpcError as exc:
            return exc

    outcomes = await asyncio.gather(*(one(i) for i in range(120)))
    won = [o for o in outcomes if isinstance(o, res.Reservation)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 10
    assert len({r.name for r in won}) == 10
    assert len(lost) == 110
    assert {e.code() for e in lost} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert {reason(e) for e in lost} == {"INSUFFICIENT_STOCK"}

    level = await api.level(store.name, item.name)
    assert (level.on_hand, level.reserved, level.available) == (10, 10, 0)
    assert level.status == res.STOCK_STATUS_OUT_OF_STOCK
    books = await ledger_books(db, store.name.split("/")[1], item.name.split("/")[1])
    assert books == {
        "on_hand": 10,
        "reserved": 10,
        "moved_on_hand": 10,
        "moved_reserved": 10,
        "negative_movements": 0,
    }
    # The out-of-stock crossing happened exactly once.
    out = [
        events_pb2.OutOfStockEvent.FromString(p)
        for p in await outbox_events(db, "omni.inventory.v1.OutOfStockEvent")
    ]
    assert [e.stock_level for e in out].count(level.name) == 1

    # Committing all ten takes the stock out for good; the ledger still balances.
    await asyncio.gather(
        *(
            callers[i % CHANNELS].CommitReservation(svc.CommitReservationRequest(name=r.name))
            for i, r in enumerate(won)
        )
    )
    level = await api.level(store.name, item.name)
    assert (level.on_hand, level.reserved, level.available) == (0, 0, 0)
    books = await ledger_books(db, store.name.split("/")[1], item.name.split("/")[1])
    assert books["moved_on_hand"] == books["on_hand"] == 0
    assert books["moved_reserved"] == books["reserved"] == 0


async def test_two_items_reserved_in_opposite_orders_concurrently_never_deadlock(
    api: Api, callers: list[Api], db: Database
) -> None:
    a, b = await api.item(), await api.item()
    s1, s2 = await api.store(), await api.store()
    for loc in (s1, s2):
        for item in (a, b):
            await api.receive(loc.name, item.name, 1000)
    rng = random.Random(7)

    async def one(i: int) -> res.Reservation:
        lines = [
            (a.name, 1 + i % 3, s1.name),
            (b.name, 1, s1.name),
            (a.name, 2, s2.name),
            (b.name, 1, s2.name),
        ]
        if i % 2:
            lines.reverse()
        else:
            rng.shuffle(lines)
        reservation = await callers[i % CHANNELS].reserve(*lines)
        # Give some back at once, in the other order, while other reservations run.
        if i % 3 == 0:
            await callers[(i + 1) % CHANNELS].ReleaseReservation(
                svc.ReleaseReservationRequest(name=reservation.name)
            )
        elif i % 3 == 1:
            await callers[(i + 2) % CHANNELS].CommitReservation(
                svc.CommitReservationRequest(name=reservation.name)
            )
        return reservation

    async with asyncio.timeout(30):
        done = await asyncio.gather(*(one(i) for i in range(60)))
    assert len(done) == 60
    for loc in (s1, s2):
        for item in (a, b):
            books = await ledger_books(db, loc.name.split("/")[1], item.name.split("/")[1])
            assert books["on_hand"] == books["moved_on_hand"]
            assert books["reserved"] == books["moved_reserved"]
            assert books["negative_movements"] == 0


async def test_scarce_multi_line_reservations_are_all_or_nothing(
    api: Api, callers: list[Api], db: Database
) -> None:
    a, b = await api.item(), await api.item()
    store = await api.store()
    await api.receive(store.name, a.name, 5)
    await api.receive(store.name, b.name, 7)

    async def one(i: int) -> bool:
        lines = [(a.name, 1, store.name), (b.name, 1, store.name)]
        try:
            await callers[i % CHANNELS].reserve(*(lines if i % 2 else lines[::-1]))
            return True
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.FAILED_PRECONDITION
            return False

    results = await asyncio.gather(*(one(i) for i in range(40)))
    assert sum(results) == 5
    # Nothing half-reserved: B holds exactly as many units as A.
    assert (await api.level(store.name, a.name)).reserved == 5
    assert (await api.level(store.name, b.name)).reserved == 5


async def test_a_retried_reservation_returns_the_first_result_and_reserves_once(
    api: Api, callers: list[Api]
) -> None:
    item = await api.item()
    store = await api.store()
    await api.receive(store.name, item.name, 10)
    request_id = rid()
    first = await api.reserve((item.name, 4, store.name), request_id=request_id)
    again = await api.reserve((item.name, 4, store.name), request_id=request_id)
    assert again == first
    assert (await api.level(store.name, item.name)).reserved == 4

    # Concurrent duplicates (a client retrying on a timeout while the first call still runs).
    request_id = rid()
    twins = await asyncio.gather(
        *(callers[i % CHANNELS].reserve((item.name, 6, store.name), request_id=request_id) for i in range(12))
    )
    assert len({t.name for t in twins}) == 1
    assert all(t == twins[0] for t in twins)
    assert (await api.level(store.name, item.name)).reserved == 10

    # Reusing the id for another request is refused rather than answered with the wrong result.
    err = await _error(api.reserve((item.name, 1, store.name), request_id=request_id))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)["BadRequest"].field_violations[0].reason == "REQUEST_ID_REUSED"


async def test_expired_reservations_are_released_by_the_sweeper(api: Api, db: Database) -> None:
    item = await api.item()
    store = await api.store()
    await api.receive(store.name, item.name, 3)
    short = res.Reservation(
        lines=[res.ReservationLine(item=item.name, quantity=3, location=store.name)],
        ttl=duration_pb2.Duration(nanos=300_000_000),
        owner="customers/c1/cart",
    )
    reservation = await api.CreateReservation(
        svc.CreateReservationRequest(reservation=short, request_id=rid())
    )
    assert (await api.level(store.name, item.name)).available == 0

    async def expired() -> bool:
        got = await api.GetReservation(svc.GetReservationRequest(name=reservation.name))
        return got.state == res.RESERVATION_STATE_EXPIRED

    await eventually(expired, timeout=10)
    level = await api.level(store.name, item.name)
    assert (level.on_hand, level.reserved, level.available) == (3, 0, 3)
    movements = await api.ListStockMovements(svc.ListStockMovementsRequest(parent=level.name))
    assert [m.kind for m in movements.stock_movements][:2] == [
        res.MOVEMENT_KIND_RESERVATION_EXPIRY,
        res.MOVEMENT_KIND_RESERVATION,
    ]
    assert movements.stock_movements[0].actor == ""
    events = [
        events_pb2.ReservationExpiredEvent.FromString(p)
        for p in await outbox_events(db, "omni.inventory.v1.ReservationExpiredEvent")
    ]
    mine = [e for e in events if e.reservation.name == reservation.name]
    assert len(mine) == 1
    assert mine[0].reservation.state == res.RESERVATION_STATE_EXPIRED
    assert mine[0].reservation.owner == "customers/c1/cart"
    # An expired reservation can be neither extended nor committed; releasing it changes nothing.
    err = await _error(api.CommitReservation(svc.CommitReservationRequest(name=reservation.name)))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err) == "RESERVATION_NOT_ACTIVE"
    released = await api.ReleaseReservation(svc.ReleaseReservationRequest(name=reservation.name))
    assert released.state == res.RESERVATION_STATE_EXPIRED


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value
