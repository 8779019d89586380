"""Reservations: all-or-nothing holds on stock, their lifecycle, and the expiry of unused ones.

Creating a reservation, in one transaction:
1. check the items and named locations (NOT_FOUND, ITEM_INACTIVE);
2. read a snapshot of availability and plan the allocation with the strategy (no locks yet);
3. if the snapshot already shows a short line, fail with every short line listed;
4. write the reservation, then take each planned (location, item) quantity with the guarded
   ``UPDATE … WHERE available >= quantity`` in sorted (location, item) order;
5. write the movements and events.
If a guarded update misses (a concurrent reservation took the units after the snapshot), the
whole transaction rolls back, so nothing stays reserved, and the attempt is repeated from a
fresh snapshot a bounded number of times, after which the call fails INSUFFICIENT_STOCK.
No code path reads a quantity, decides, and writes it back: the database decides.

Commit, release and expiry lock the reservation row first, then the levels in sorted order,
and give back exactly what the reservation's allocations hold.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, NoReturn

from sqlalchemy import literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.db.engine import after_commit
from omni_runtime.db.idempotency import answer_early, once
from omni_runtime.errors import Aborted, FailedPrecondition, NotFound
from omni_runtime.listing import Compiler, Condition, Field, Kind, Listing, ListQuery
from omni_runtime.timestamps import utcnow
from services.inventory import convert, metrics, store
from services.inventory.catalogue import existing, require_found
from services.inventory.domain import DOMAIN, allocation, geo
from services.inventory.events import MovementJournal, reservation_event
from services.inventory.txn import Unit, system_channel

log = logging.getLogger("omni.inventory.reservations")

DEFAULT_TTL = timedelta(minutes=15)
MAX_TTL = timedelta(days=14)
# Plans made from a snapshot that a concurrent reservation invalidated are retried this often.
MAX_ATTEMPTS = 4
CREATE_SCOPE = "inventory.CreateReservation"

ACTIVE = res.RESERVATION_STATE_ACTIVE
COMMITTED = res.RESERVATION_STATE_COMMITTED
RELEASED = res.RESERVATION_STATE_RELEASED
EXPIRED = res.RESERVATION_STATE_EXPIRED


def _allocated(column: Any, prefix: str) -> Compiler:
    """``lines.item = "items/A"``: some allocation of the reservation matches (``!=``: none does)."""
    alloc = store.reservation_allocations

    def compile_(cond: Condition) -> Any:
        text_value = str(cond.value)
        if not text_value.startswith(prefix):
            return literal(cond.op == "!=")
        found = (
            select(literal(1))
            .where(
                alloc.c.reservation_id == store.reservations.c.id, column == text_value.removeprefix(prefix)
            )
            .exists()
        )
        return found if cond.op == "=" else ~found

    return compile_


_AT_LOCATION = _allocated(store.reservation_allocations.c.location_id, "locations/")
RESERVATIONS = Listing(
    fields={
        "state": Field(Kind.ENUM, res.ReservationState, sql=store.reservations.c.state),
        "owner": Field(Kind.STRING, sql=store.reservations.c.owner),
        "expire_time": Field(Kind.TIMESTAMP, sql=store.reservations.c.expire_time),
        "create_time": Field(Kind.TIMESTAMP, sql=store.reservations.c.create_time),
        "lines.item": Field(Kind.STRING, sql=_allocated(store.reservation_allocations.c.item_sku, "items/")),
        "lines.allocations.location": Field(Kind.STRING, sql=_AT_LOCATION),
    },
    order_by={
        "create_time": store.reservations.c.create_time,
        "expire_time": store.reservations.c.expire_time,
    },
    default_order="create_time desc",
    tiebreak=[store.reservations.c.id],
    domain=DOMAIN,
)


@dataclass(frozen=True)
class NewReservation:
    """A validated CreateReservation request in domain terms (bare ids)."""

    lines: list[allocation.Line]
    strategy: int
    near: tuple[float, float] | None
    allow_split: bool
    pickup: bool
    # Either an absolute expiry, or a time to live counted from the creation.
    expire_time: datetime | None
    ttl: timedelta
    owner: str


class _RaceLost(Exception):
    """A guarded update missed because the snapshot went stale; plan again."""


def insufficient(shortfalls: Sequence[allocation.Shortfall]) -> FailedPrecondition:
    """FAILED_PRECONDITION INSUFFICIENT_STOCK with one violation per short line."""
    first = shortfalls[0]
    meta = {
        "item": convert.item_name(first.item),
        "line_index": str(first.line_index),
        "requested": str(first.requested),
        "available": str(first.available),
    }
    if first.location:
        meta["location"] = convert.location_name(first.location)
    violations = [
        (
            "INSUFFICIENT_STOCK",
            f"lines[{s.line_index}]",
            f"{convert.item_name(s.item)}: requested {s.requested}, available {s.available}"
            + (f" at {convert.location_name(s.location)}" if s.location else "")
            + f" (short by {s.requested - s.available})",
        )
        for s in shortfalls
    ]
    return FailedPrecondition(
        f"not enough stock for {len(shortfalls)} line(s); nothing was reserved",
        reason="INSUFFICIENT_STOCK",
        domain=DOMAIN,
        metadata=meta,
        violations=violations,
    )


def not_active(row: store.AnyRow, why: str = "") -> FailedPrecondition:
    state = res.ReservationState.Name(row.state)
    return FailedPrecondition(
        why or f"{convert.reservation_name(row.id)} is {state}, not ACTIVE",
        reason="RESERVATION_NOT_ACTIVE",
        domain=DOMAIN,
        metadata={"reservation": convert.reservation_name(row.id), "state": state},
        violations=[
            ("RESERVATION_NOT_ACTIVE", convert.reservation_name(row.id), why or f"the reservation is {state}")
        ],
    )


# --- create ----------------------------------------------------------------------------------


async def _sites(session: AsyncSession, spec: NewReservation) -> list[allocation.Site]:
    """Locations the strategy may draw on for lines that name none."""
    loc = store.locations
    eligible = loc.c.pickup_enabled.is_(True) if spec.pickup else loc.c.ship_from.is_(True)
    rows = await session.execute(
        select(loc.c.id, loc.c.allocation_priority, loc.c.latitude, loc.c.longitude).where(eligible)
    )
    sites = []
    for r in rows:
        distance = None
        if spec.near is not None and r.latitude is not None and r.longitude is not None:
            distance = geo.haversine_m(spec.near[0], spec.near[1], r.latitude, r.longitude)
        sites.append(allocation.Site(r.id, r.allocation_priority, distance))
    return sites


async def plan_reservation(session: AsyncSession, spec: NewReservation) -> allocation.Plan:
    """Check the items (NOT_FOUND, ITEM_INACTIVE) and plan the lines from a snapshot of what is
    available (no locks); the plan lists the lines it cannot serve as shortfalls."""
    skus = sorted({line.item for line in spec.lines})
    fixed = sorted({line.location for line in spec.lines if line.location})
    sites = await _sites(session, spec) if any(not line.location for line in spec.lines) else []
    # One query answers "do the items exist, are they active, what is available where".
    found_items, levels = await store.items_with_levels(
        session, skus, sorted({*fixed, *(s.location for s in sites)})
    )
    require_found(skus, [], (found_items, {}))
    inactive = [line for line in spec.lines if not found_items[line.item]]
    if inactive:
        raise FailedPrecondition(
            f"{convert.item_name(inactive[0].item)} is not active and cannot be reserved",
            reason="ITEM_INACTIVE",
            domain=DOMAIN,
            metadata={"item": convert.item_name(inactive[0].item), "line_index": str(inactive[0].index)},
            violations=[
                ("ITEM_INACTIVE", f"lines[{line.index}]", f"{convert.item_name(line.item)} is not active")
                for line in inactive
            ],
        )
    snapshot = {key: convert.quantities(row).available for key, row in levels.items()}
    return allocation.plan(
        spec.lines, strategy=spec.strategy, allow_split=spec.allow_split, sites=sites, available=snapshot
    )


async def refuse_shortfalls(session: AsyncSession, spec: NewReservation, plan: allocation.Plan) -> NoReturn:
    """INSUFFICIENT_STOCK for a plan's short lines (NOT_FOUND if a named location is unknown)."""
    # A level with stock implies its location exists, so only a failing call pays for telling
    # an unknown location (NOT_FOUND) from an empty one.
    fixed = sorted({line.location for line in spec.lines if line.location})
    require_found([], fixed, await existing(session, [], fixed))
    raise insufficient(plan.shortfalls)


def reservation_rows(
    spec: NewReservation, plan: allocation.Plan, reservation_id: str, now: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The reservation's row (every column) and its allocation rows, for a plan without shortfalls."""
    lines = [
        (line.item, line.quantity, line.location, plan.allocations[line.index])
        for line in sorted(spec.lines, key=lambda ln: ln.index)
    ]
    row = {
        "id": reservation_id,
        "state": ACTIVE,
        "strategy": spec.strategy,
        "near_latitude": spec.near[0] if spec.near else None,
        "near_longitude": spec.near[1] if spec.near else None,
        "allow_split": spec.allow_split,
        "pickup": spec.pickup,
        "owner": spec.owner,
        "release_reason": "",
        "lines": convert.lines_json(lines),
        "expire_time": spec.expire_time or now + spec.ttl,
        "version": 1,
        "create_time": now,
        "update_time": now,
    }
    allocations = [
        {
            "reservation_id": reservation_id,
            "line_index": index,
            "location_id": location_id,
            "item_sku": sku,
            "quantity": qty,
        }
        for index, (sku, _, _, parts) in enumerate(lines)
        for location_id, qty in parts
    ]
    return row, allocations


async def _attempt(
    unit: Unit, session: AsyncSession, spec: NewReservation, request_id: str, *, final: bool
) -> res.Reservation:
    now = utcnow()
    plan = await plan_reservation(session, spec)
    if plan.shortfalls:
        await refuse_shortfalls(session, spec, plan)
    reservation_id = uuid.uuid4().hex
    values, allocations = reservation_rows(spec, plan, reservation_id, now)
    await session.execute(store.reservations.insert().values(values))
    await session.execute(store.reservation_allocations.insert(), allocations)
    reservation = convert.reservation(SimpleNamespace(**values))
    await reservation_event(session, unit.outbox, "created", reservation, now)
    await answer_early(session, reservation)

    # The critical section: from the first guarded update to the commit, as short as possible.
    journal = unit.journal(session, now, request_id)
    for location_id, sku, qty in plan.takes():  # sorted: the lock order
        level = await store.reserve_guarded(session, location_id, sku, qty, now)
        if level is None:
            if not final:
                raise _RaceLost
            current = convert.quantities(await store.level(session, location_id, sku)).available
            short = [
                allocation.Shortfall(line.index, sku, line.quantity, current, line.location)
                for line in spec.lines
                if line.item == sku and any(loc == location_id for loc, _ in plan.allocations[line.index])
            ]
            raise insufficient(short)
        journal.record(level, res.MOVEMENT_KIND_RESERVATION, 0, qty, reservation_id=reservation_id)
    await journal.flush()
    return reservation


async def create_reservation(
    unit: Unit, request: svc.CreateReservationRequest, spec: NewReservation
) -> res.Reservation:
    for attempt in range(MAX_ATTEMPTS):
        final = attempt == MAX_ATTEMPTS - 1

        async def work(session: AsyncSession, final: bool = final) -> res.Reservation:
            reservation = await _attempt(unit, session, spec, request.request_id, final=final)
            after_commit(session, metrics.RESERVATIONS.labels("created").inc)
            return reservation

        try:
            return await once(unit.db, CREATE_SCOPE, request.request_id, request, res.Reservation, work)
        except _RaceLost:
            metrics.RESERVATION_RETRIES.inc()
            await asyncio.sleep(0)
            continue
        except FailedPrecondition as exc:
            metrics.RESERVATIONS.labels("rejected").inc()
            metrics.RESERVATION_FAILURES.labels(exc.reason.lower()).inc()
            raise
        except NotFound:
            metrics.RESERVATIONS.labels("rejected").inc()
            metrics.RESERVATION_FAILURES.labels("unknown_item_or_location").inc()
            raise
    raise AssertionError("unreachable: the final attempt raises instead of retrying")


# --- read ------------------------------------------------------------------------------------


async def get_reservation(unit: Unit, reservation_id: str) -> res.Reservation:
    async with unit.db.read() as session:
        row = (
            await session.execute(select(store.reservations).where(store.reservations.c.id == reservation_id))
        ).first()
    if row is None:
        raise NotFound(convert.reservation_name(reservation_id), domain=DOMAIN)
    return convert.reservation(row)


async def list_reservations(
    unit: Unit, query: ListQuery, *, at_location: str | None = None
) -> svc.ListReservationsResponse:
    statement = select(store.reservations)
    if at_location is not None:  # a store associate sees the reservations of their store
        location = convert.location_name(at_location)
        statement = statement.where(_AT_LOCATION(Condition("lines.allocations.location", "=", location)))
    async with unit.db.transaction() as session:
        rows, token = await query.page(session, statement)
    return svc.ListReservationsResponse(
        reservations=[convert.reservation(row) for row in rows], next_page_token=token
    )


# --- lifecycle -------------------------------------------------------------------------------


async def _locked(session: AsyncSession, reservation_id: str) -> store.AnyRow:
    row = (
        await session.execute(
            select(store.reservations).where(store.reservations.c.id == reservation_id).with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound(convert.reservation_name(reservation_id), domain=DOMAIN)
    return row


def require_unexpired(row: store.AnyRow, now: datetime) -> None:
    """An ACTIVE reservation past its expiry is over, even before the sweeper marks it EXPIRED."""
    if row.expire_time <= now:
        raise not_active(row, f"{convert.reservation_name(row.id)} expired at {row.expire_time.isoformat()}")


def check_etag(row: store.AnyRow, given: str) -> None:
    if given and convert.version_of(given) != row.version:
        raise Aborted(
            f"{convert.reservation_name(row.id)} changed since it was read",
            current_etag=convert.etag(row.version),
            domain=DOMAIN,
        )


async def _give_back(
    session: AsyncSession,
    journal: MovementJournal,
    reservation_ids: Sequence[str],
    kind: int,
    now: datetime,
    *,
    reason: str = "",
    reference: str = "",
) -> None:
    """Return what reservations hold to their levels, one movement per (level, reservation).

    Levels are locked in (location, item) order whatever the reservations, like every other
    writer of levels, so a sweeper batch and a reservation cannot deadlock.
    """
    alloc = store.reservation_allocations
    rows = await session.execute(
        select(alloc.c.location_id, alloc.c.item_sku, alloc.c.reservation_id, alloc.c.quantity).where(
            alloc.c.reservation_id.in_(list(reservation_ids))
        )
    )
    totals: dict[tuple[str, str, str], int] = {}
    for r in rows:
        key = (r.location_id, r.item_sku, r.reservation_id)
        totals[key] = totals.get(key, 0) + r.quantity
    on_hand_sign = -1 if kind == res.MOVEMENT_KIND_RESERVATION_COMMIT else 0
    for (location_id, sku, reservation_id), qty in sorted(totals.items()):
        level = await store.move(session, location_id, sku, on_hand_sign * qty, -qty, now)
        journal.record(
            level,
            kind,
            on_hand_sign * qty,
            -qty,
            reason=reason,
            reference=reference,
            reservation_id=reservation_id,
        )


async def _set_state(
    session: AsyncSession, row: store.AnyRow, values: dict[str, Any], now: datetime
) -> store.AnyRow:
    return (
        await session.execute(
            update(store.reservations)
            .where(store.reservations.c.id == row.id)
            .values(**values, version=row.version + 1, update_time=now)
            .returning(*store.reservations.c)
        )
    ).one()


Authorize = Callable[[res.Reservation], None]


async def extend_reservation(
    unit: Unit,
    request: svc.ExtendReservationRequest,
    reservation_id: str,
    new_expiry: Callable[[datetime], datetime],
    authorize: Authorize,
) -> res.Reservation:
    async def work(session: AsyncSession) -> res.Reservation:
        now = utcnow()
        row = await _locked(session, reservation_id)
        authorize(convert.reservation(row))
        if row.state != ACTIVE:
            raise not_active(row)
        require_unexpired(row, now)
        check_etag(row, request.etag)
        expire_time = new_expiry(now)
        if expire_time > row.create_time + MAX_TTL:
            raise FailedPrecondition(
                "a reservation may last at most 14 days from its creation",
                reason="EXPIRY_TOO_LATE",
                domain=DOMAIN,
                metadata={"latest": (row.create_time + MAX_TTL).isoformat()},
                violations=[
                    ("EXPIRY_TOO_LATE", convert.reservation_name(row.id), "at most 14 days after creation")
                ],
            )
        return convert.reservation(await _set_state(session, row, {"expire_time": expire_time}, now))

    return await once(
        unit.db, "inventory.ExtendReservation", request.request_id, request, res.Reservation, work
    )


@dataclass(frozen=True)
class Ending:
    """How a reservation ends on request: committed (the goods left) or released (given back)."""

    method: str
    state: int
    already: tuple[int, ...]  # states in which a retry finds it ended already (answered as is)
    label: str  # event and metric
    movement: int
    check_expiry: bool  # a release may give back what the sweeper has not expired yet


COMMIT = Ending(
    "inventory.CommitReservation",
    COMMITTED,
    (COMMITTED,),
    "committed",
    res.MOVEMENT_KIND_RESERVATION_COMMIT,
    True,
)
RELEASE = Ending(
    "inventory.ReleaseReservation",
    RELEASED,
    (RELEASED, EXPIRED),
    "released",
    res.MOVEMENT_KIND_RESERVATION_RELEASE,
    False,
)


async def commit_reservation(
    unit: Unit, request: svc.CommitReservationRequest, reservation_id: str, authorize: Authorize
) -> res.Reservation:
    return await _end(unit, request, reservation_id, authorize, COMMIT, {}, reference=request.reference)


async def release_reservation(
    unit: Unit, request: svc.ReleaseReservationRequest, reservation_id: str, authorize: Authorize
) -> res.Reservation:
    values = {"release_reason": request.reason}
    return await _end(unit, request, reservation_id, authorize, RELEASE, values, reason=request.reason)


async def _end(
    unit: Unit,
    request: svc.CommitReservationRequest | svc.ReleaseReservationRequest,
    reservation_id: str,
    authorize: Authorize,
    ending: Ending,
    values: dict[str, Any],
    **movement: str,
) -> res.Reservation:
    async def work(session: AsyncSession) -> res.Reservation:
        now = utcnow()
        row = await _locked(session, reservation_id)
        authorize(convert.reservation(row))
        if row.state in ending.already:
            return convert.reservation(row)
        if row.state != ACTIVE:
            raise not_active(row)
        if ending.check_expiry:
            require_unexpired(row, now)
        check_etag(row, request.etag)
        # State and event first: the level rows (possibly hot) are locked last, until commit.
        updated = await _set_state(session, row, {"state": ending.state, **values}, now)
        reservation = convert.reservation(updated)
        await reservation_event(session, unit.outbox, ending.label, reservation, now)
        await answer_early(session, reservation)
        journal = unit.journal(session, now, request.request_id)
        await _give_back(session, journal, [row.id], ending.movement, now, **movement)
        await journal.flush()
        after_commit(session, metrics.RESERVATIONS.labels(ending.label).inc)
        return reservation

    return await once(unit.db, ending.method, request.request_id, request, res.Reservation, work)


# --- expiry ----------------------------------------------------------------------------------


async def expire_due(unit: Unit, batch: int = 100) -> int:
    """Expire one batch of ACTIVE reservations past their expiry; returns how many.

    Rows are claimed with ``FOR UPDATE SKIP LOCKED``: several replicas sweep disjoint batches,
    and a reservation being committed or released right now is simply left for the next pass.
    """
    r = store.reservations
    now = utcnow()
    async with unit.db.transaction() as session:
        due = list(
            await session.execute(
                select(r)
                .where(r.c.state == ACTIVE, r.c.expire_time <= now)
                .order_by(r.c.expire_time, r.c.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        )
        if not due:
            return 0
        journal = MovementJournal(session, unit.outbox, now, channel=system_channel())
        ids = sorted(row.id for row in due)
        await _give_back(session, journal, ids, res.MOVEMENT_KIND_RESERVATION_EXPIRY, now, reason="expired")
        await journal.flush()
        for row in due:
            reservation = convert.reservation(await _set_state(session, row, {"state": EXPIRED}, now))
            await reservation_event(session, unit.outbox, "expired", reservation, now)
    metrics.RESERVATIONS.labels("expired").inc(len(due))
    return len(due)
