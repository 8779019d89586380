"""Hot-SKU groups (services/inventory/coalesced.py): correctness with many buyers on one level.

Two inventory replicas (two in-process ServiceHosts on one database, each grouping its own
callers) serve buyers through several connections each. What the database holds is checked
against every caller's answer: no oversell, the ledger's movements sum to the level, each
answer matches its stored reservation, refused calls leave nothing behind, retries answer as
the first call. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import inventory_service_pb2_grpc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.errors import FailedPrecondition
from omni_runtime.testing.services import RunningService, running_service
from services.inventory import reservations
from services.inventory.coalesced import Coalescer, Take
from services.inventory.domain import allocation
from services.inventory.lanes import Lanes, Member
from services.inventory.main import SERVICE
from services.inventory.txn import Unit
from tests.inventory.conftest import Api, ledger_books, reason, rid

CONNECTIONS_PER_REPLICA = 4


@pytest.fixture(scope="module")
async def second_replica(
    inventory: RunningService, service_settings: Callable[..., Settings], key_source: StaticKeySource
) -> AsyncIterator[RunningService]:
    """Another inventory process on the same database (already migrated by the first)."""
    settings = dataclasses.replace(
        service_settings("inventory"), database_url=inventory.host.settings.database_url
    )
    async with running_service(SERVICE, settings, key_source=key_source, migrate=False) as svc_:
        yield svc_


@pytest.fixture(scope="module")
async def buyers(
    inventory: RunningService, second_replica: RunningService, api: Api
) -> AsyncIterator[list[Api]]:
    """Callers spread over both replicas, several connections each."""
    channels = [
        grpc.aio.insecure_channel(replica.target)
        for replica in (inventory, second_replica)
        for _ in range(CONNECTIONS_PER_REPLICA)
    ]
    for channel in channels:
        await channel.channel_ready()
    yield [Api(inventory_service_pb2_grpc.InventoryServiceStub(ch), api.metadata) for ch in channels]
    for channel in channels:
        await channel.close()


async def _outcome(call: Any) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return exc


def _groups() -> tuple[float, float]:
    """(groups served, calls they served) so far, from ``omni_inventory_reservation_group_size``."""
    count = REGISTRY.get_sample_value("omni_inventory_reservation_group_size_count") or 0.0
    total = REGISTRY.get_sample_value("omni_inventory_reservation_group_size_sum") or 0.0
    return count, total


async def _stored(db: Database, names: list[str]) -> dict[str, Any]:
    ids = [n.removeprefix("reservations/") for n in names]
    async with db.transaction() as session:
        rows = await session.execute(
            text("SELECT id, state, version, lines FROM reservations WHERE id = ANY(:ids)"), {"ids": ids}
        )
        return {f"reservations/{r.id}": r for r in rows}


async def test_200_buyers_on_two_replicas_share_50_units_exactly(
    api: Api, buyers: list[Api], db: Database
) -> None:
    item = await api.item()
    store = await api.warehouse()
    await api.receive(store.name, item.name, 50)
    groups_before, calls_before = _groups()

    outcomes = await asyncio.gather(
        *(_outcome(buyers[i % len(buyers)].reserve((item.name, 1, store.name))) for i in range(200))
    )
    won = [o for o in outcomes if isinstance(o, res.Reservation)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 50 and len(lost) == 150
    assert {(e.code(), reason(e)) for e in lost} == {
        (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_STOCK")
    }
    groups, calls = _groups()
    assert calls - calls_before >= 50
    assert groups - groups_before < calls - calls_before, "no call shared a transaction with another"

    level = await api.level(store.name, item.name)
    assert (level.on_hand, level.reserved, level.available) == (50, 50, 0)
    books = await ledger_books(db, store.name.removeprefix("locations/"), item.name.removeprefix("items/"))
    assert (books["moved_on_hand"], books["moved_reserved"]) == (50, 50)
    assert books["negative_movements"] == 0
    # Every winner's answer is what was stored, with one movement of its own.
    stored = await _stored(db, [r.name for r in won])
    assert set(stored) == {r.name for r in won}
    for reservation in won:
        row = stored[reservation.name]
        assert row.state == res.RESERVATION_STATE_ACTIVE and reservation.etag == f'W/"{row.version}"'
        assert [a.location for a in reservation.lines[0].allocations] == [store.name]
    async with db.transaction() as session:
        moved = (
            await session.execute(
                text(
                    "SELECT reservation_id, count(*) FROM stock_movements WHERE location_id = :l"
                    " AND item_sku = :i AND kind = :k GROUP BY reservation_id"
                ),
                {
                    "l": store.name.removeprefix("locations/"),
                    "i": item.name.removeprefix("items/"),
                    "k": res.MOVEMENT_KIND_RESERVATION,
                },
            )
        ).all()
    assert {f"reservations/{r[0]}" for r in moved} == {r.name for r in won}
    assert {r[1] for r in moved} == {1}

    # All 50 committed at once, through both replicas: grouped endings.
    committed = await asyncio.gather(
        *(
            buyers[i % len(buyers)].CommitReservation(
                svc.CommitReservationRequest(name=r.name, reference="O-1")
            )
            for i, r in enumerate(won)
        )
    )
    assert {c.state for c in committed} == {res.RESERVATION_STATE_COMMITTED}
    level = await api.level(store.name, item.name)
    assert (level.on_hand, level.reserved) == (0, 0)
    books = await ledger_books(db, store.name.removeprefix("locations/"), item.name.removeprefix("items/"))
    assert (books["moved_on_hand"], books["moved_reserved"]) == (0, 0)
    stored = await _stored(db, [r.name for r in won])
    assert {row.state for row in stored.values()} == {res.RESERVATION_STATE_COMMITTED}
    for answer in committed:
        assert answer.etag == f'W/"{stored[answer.name].version}"'


async def test_retries_inside_and_across_groups_answer_as_the_first_call(
    api: Api, buyers: list[Api], db: Database
) -> None:
    item = await api.item()
    store = await api.warehouse()
    await api.receive(store.name, item.name, 30)
    ids = [rid() for _ in range(20)]
    # Each request id sent three times at once, from both replicas, among the others.
    calls = [
        _outcome(buyers[(i + k) % len(buyers)].reserve((item.name, 1, store.name), request_id=ids[i]))
        for k in range(3)
        for i in range(len(ids))
    ]
    outcomes = await asyncio.gather(*calls)
    assert all(isinstance(o, res.Reservation) for o in outcomes), outcomes
    by_id: dict[str, set[str]] = {}
    for i, answer in zip([i for _ in range(3) for i in range(len(ids))], outcomes, strict=True):
        by_id.setdefault(ids[i], set()).add(answer.name)
    assert all(len(names) == 1 for names in by_id.values()), "a retry got another reservation"
    level = await api.level(store.name, item.name)
    assert level.reserved == 20
    # A reused id with another request is refused; a later retry still answers as the first.
    reused = await _outcome(api.reserve((item.name, 2, store.name), request_id=ids[0]))
    assert isinstance(reused, grpc.aio.AioRpcError)
    assert reused.code() is grpc.StatusCode.INVALID_ARGUMENT
    again = await api.reserve((item.name, 1, store.name), request_id=ids[0])
    assert {again.name} == by_id[ids[0]]
    # Commits retried with their request id, concurrently: one commit each.
    name = next(iter(by_id[ids[1]]))
    commit_id = rid()
    done = await asyncio.gather(
        *(
            buyers[k].CommitReservation(svc.CommitReservationRequest(name=name, request_id=commit_id))
            for k in range(len(buyers))
        )
    )
    assert {d.etag for d in done} == {done[0].etag} and done[0].state == res.RESERVATION_STATE_COMMITTED
    level = await api.level(store.name, item.name)
    assert (level.on_hand, level.reserved) == (29, 19)
    books = await ledger_books(db, store.name.removeprefix("locations/"), item.name.removeprefix("items/"))
    assert (books["moved_on_hand"] + 0, books["moved_reserved"]) == (29, 19)


async def test_a_member_short_of_stock_is_refused_alone_in_arrival_order(
    api: Api, inventory: RunningService, db: Database
) -> None:
    """One group, as a lane forms it: 3, 3 and 2 units asked of 5. The first is served, the
    second does not fit and is refused alone, the third (arriving later, asking less) is served."""
    item = await api.item()
    store = await api.warehouse()
    await api.receive(store.name, item.name, 5)
    assert inventory.host.runtime is not None and inventory.host.runtime.db is not None
    unit = Unit(inventory.host.runtime.db, inventory.host.runtime.outbox)  # type: ignore[arg-type]
    coalescer = Coalescer(unit)
    sku, location = item.name.removeprefix("items/"), store.name.removeprefix("locations/")
    members = []
    for quantity in (3, 3, 2):
        request = svc.CreateReservationRequest(
            reservation=res.Reservation(
                lines=[res.ReservationLine(item=item.name, quantity=quantity, location=store.name)]
            ),
            request_id=rid(),
        )
        spec = reservations.NewReservation(
            lines=[allocation.Line(0, sku, quantity, location)],
            strategy=allocation.FIXED,
            near=None,
            allow_split=False,
            pickup=False,
            expire_time=None,
            ttl=reservations.DEFAULT_TTL,
            owner="",
        )
        take = await coalescer._take(request, spec, final=True)
        assert isinstance(take, Take)
        members.append(take)
    await coalescer._serve((location, sku), members)
    first, second, third = (
        m.future.result() if not m.future.exception() else m.future.exception() for m in members
    )
    assert isinstance(first, res.Reservation) and isinstance(third, res.Reservation)
    assert isinstance(second, FailedPrecondition) and second.reason == "INSUFFICIENT_STOCK"
    level = await api.level(store.name, item.name)
    assert (level.reserved, level.available) == (5, 0)
    # The refused member left nothing: no reservation, no allocation, no event, no stored answer.
    refused = members[1]
    async with db.transaction() as session:
        leftovers = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM reservations WHERE id = :r),"
                    " (SELECT count(*) FROM reservation_allocations WHERE reservation_id = :r),"
                    " (SELECT count(*) FROM omni_outbox"
                    "  WHERE position(convert_to(:r, 'UTF8') in payload) > 0),"
                    " (SELECT count(*) FROM omni_idempotency_keys WHERE request_id = :q)"
                ),
                {"r": refused.row["id"], "q": refused.claim.request_id},  # type: ignore[union-attr]
            )
        ).one()
        kept = (
            await session.execute(
                text(
                    "SELECT count(*) FROM omni_idempotency_keys WHERE request_id = ANY(:q) AND response <> ''"
                ),
                {"q": [m.claim.request_id for m in (members[0], members[2])]},  # type: ignore[union-attr]
            )
        ).scalar_one()
    assert tuple(leftovers) == (0, 0, 0, 0)
    assert kept == 2
    books = await ledger_books(db, location, sku)
    assert (books["moved_on_hand"], books["moved_reserved"]) == (5, 5)


# --- the lanes alone (no database) -----------------------------------------------------------


async def test_a_lane_groups_what_arrives_while_a_group_runs_in_arrival_order() -> None:
    release = asyncio.Event()
    groups: list[list[str]] = []

    async def serve(key: str, members: Any) -> None:
        groups.append([m.dedupe for m in members])
        if len(groups) == 1:
            await release.wait()  # the first group is "in its transaction"
        for member in members:
            member.resolve(member.dedupe)

    lanes: Lanes[str, Member] = Lanes(serve)
    first = asyncio.create_task(lanes.submit("k", Member(dedupe="a")))
    await asyncio.sleep(0)
    later = [asyncio.create_task(lanes.submit("k", Member(dedupe=d))) for d in ("b", "c", "b", "d")]
    gone = asyncio.create_task(lanes.submit("k", Member(dedupe="e")))
    await asyncio.sleep(0)
    gone.cancel()  # leaves the queue before its group forms
    release.set()
    assert await first == "a"
    assert [await t for t in later] == ["b", "c", "b", "d"]
    # b's twin waits for the group after: the same request id never shares a transaction.
    assert groups == [["a"], ["b", "c", "d"], ["b"]]
    assert gone.cancelled()
