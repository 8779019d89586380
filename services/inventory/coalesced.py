"""Reservations, commits and releases on one stock level, served in groups (a flash sale's path).

With one transaction per reservation, every buyer of a hot SKU holds the level's row lock from
its guarded update to its commit (movements, events, the WAL flush), so buyers queue behind one
another and throughput falls as they multiply. Here, calls that touch exactly one level — a
reservation whose plan takes from one (location, item), the commit or release of a reservation
held at one level — join that level's lane (lanes.py); each group is one transaction:

1. claim every member's request id at once (``idempotency.claim_many``, sorted: retries inside
   and across groups and replicas answer as the first call did);
2. lock the reservations the group ends (by id), check each (state, expiry, etag), update them;
3. write every new reservation, its allocations and every lifecycle event;
4. only then take the level: one guarded ``UPDATE`` for the group's net change. When it misses
   (not enough for everyone), the row is read under its lock and the reservations are served
   first come, first served: in arrival order, each takes what it asks if that much is left
   after those before it; one that does not fit is refused alone (INSUFFICIENT_STOCK, or
   re-planned when the server chose its location), and its rows are removed again;
5. one movement per member (its own request id, actor and channel) and their events, in two
   statements; commit once.

Several replicas each group their own callers; their groups meet at the level's row lock and the
guard, exactly like single reservations, so they stay correct together. Locks are taken in the
order every other writer of the ledger uses (request ids, reservations, levels, subscriptions),
so groups cannot deadlock with each other or with single transactions.

Calls that touch several levels (a cart checkout with many lines) run alone, as before
(``reservations``): they would have to lock every level of theirs in order, and the gain is in
the crowd on one SKU.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.context import current_channel, current_principal
from omni_runtime.db import bulk
from omni_runtime.db.engine import after_commit
from omni_runtime.db.idempotency import Claim, claim_many, forget, recall, store_answers
from omni_runtime.errors import FailedPrecondition, NotFound, OmniError
from omni_runtime.timestamps import utcnow
from services.inventory import convert, metrics, reservations, store
from services.inventory.domain import DOMAIN, allocation
from services.inventory.events import Caller, MovementJournal, reservation_message
from services.inventory.lanes import Lanes, Member
from services.inventory.reservations import (
    ACTIVE,
    MAX_ATTEMPTS,
    Authorize,
    Ending,
    NewReservation,
    insufficient,
    not_active,
)
from services.inventory.txn import Unit

Key = tuple[str, str]  # (location id, item sku)


class _Replan:
    """A member whose server-chosen location could not serve it: plan again."""


REPLAN = _Replan()


def _caller(request_id: str) -> Caller:
    return Caller(request_id, current_principal.get().subject, current_channel.get())


@dataclass(eq=False)
class Take(Member):
    """A new reservation taking ``quantity`` from the lane's level."""

    key: Key = ("", "")
    row: dict[str, Any] = field(default_factory=dict)
    allocations: list[dict[str, Any]] = field(default_factory=list)
    response: res.Reservation = field(default_factory=res.Reservation)
    claim: Claim | None = None
    caller: Caller = field(default_factory=Caller)
    quantity: int = 0
    spec: NewReservation | None = None
    # The caller named the location: not fitting is final (otherwise the member is re-planned).
    fixed: bool = True


@dataclass(eq=False)
class End(Member):
    """A commit or release of a reservation held at the lane's level."""

    key: Key = ("", "")
    reservation_id: str = ""
    ending: Ending | None = None
    values: dict[str, Any] = field(default_factory=dict)
    etag: str = ""
    reason: str = ""
    reference: str = ""
    claim: Claim | None = None
    caller: Caller = field(default_factory=Caller)


class Coalescer:
    """The lanes of this replica and the group transaction that serves them."""

    def __init__(self, unit: Unit, *, max_group: int = 200) -> None:
        self.unit = unit
        self.lanes: Lanes[Key, Take | End] = Lanes(self._serve, max_group=max_group)
        self.lanes.on_group = metrics.GROUP_SIZE.observe

    # --- the calls -----------------------------------------------------------------------------

    async def create(self, request: svc.CreateReservationRequest, spec: NewReservation) -> res.Reservation:
        try:
            for attempt in range(MAX_ATTEMPTS):
                take = await self._take(request, spec, final=attempt == MAX_ATTEMPTS - 1)
                if take is None:  # several levels: alone, as before
                    return await reservations.create_reservation(self.unit, request, spec)
                if isinstance(take, res.Reservation):
                    return take  # a retry, answered from the first call's stored response
                made = await self.lanes.submit(take.key, take)
                if made is REPLAN:
                    metrics.RESERVATION_RETRIES.inc()
                    continue
                assert isinstance(made, res.Reservation)
                return made
        except FailedPrecondition as exc:
            metrics.RESERVATIONS.labels("rejected").inc()
            metrics.RESERVATION_FAILURES.labels(exc.reason.lower()).inc()
            raise
        except NotFound:
            metrics.RESERVATIONS.labels("rejected").inc()
            metrics.RESERVATION_FAILURES.labels("unknown_item_or_location").inc()
            raise
        raise AssertionError("unreachable: the final attempt refuses instead of re-planning")

    async def commit(
        self, request: svc.CommitReservationRequest, reservation_id: str, authorize: Authorize
    ) -> res.Reservation:
        end = await self._end(request, reservation_id, authorize, reservations.COMMIT)
        if end is None:
            return await reservations.commit_reservation(self.unit, request, reservation_id, authorize)
        end.reference = request.reference
        return await self._submit_end(end)

    async def release(
        self, request: svc.ReleaseReservationRequest, reservation_id: str, authorize: Authorize
    ) -> res.Reservation:
        end = await self._end(request, reservation_id, authorize, reservations.RELEASE)
        if end is None:
            return await reservations.release_reservation(self.unit, request, reservation_id, authorize)
        end.values = {"release_reason": request.reason}
        end.reason = request.reason
        return await self._submit_end(end)

    async def _submit_end(self, end: End) -> res.Reservation:
        done = await self.lanes.submit(end.key, end)
        assert isinstance(done, res.Reservation)
        return done

    # --- members, prepared in the caller's own task (its principal, channel, deadline) ----------

    async def _take(
        self, request: svc.CreateReservationRequest, spec: NewReservation, *, final: bool
    ) -> Take | res.Reservation | None:
        scope = reservations.CREATE_SCOPE
        async with self.unit.db.read() as session:
            plan = await reservations.plan_reservation(session, spec)
            if plan.shortfalls:
                stored = await recall(session, scope, request.request_id, request, res.Reservation)
                if stored is not None:
                    return stored
                await reservations.refuse_shortfalls(session, spec, plan)
        takes = plan.takes()
        if len(takes) != 1:
            return None
        location_id, sku, quantity = takes[0]
        row, allocations = reservations.reservation_rows(spec, plan, uuid.uuid4().hex, utcnow())
        response = convert.reservation(SimpleNamespace(**row))
        return Take(
            dedupe=(scope, request.request_id),
            key=(location_id, sku),
            row=row,
            allocations=allocations,
            response=response,
            claim=Claim(scope, request.request_id, request, res.Reservation, answer=response),
            caller=_caller(request.request_id),
            quantity=quantity,
            spec=spec,
            fixed=final or all(line.location for line in spec.lines),
        )

    async def _end(
        self,
        request: svc.CommitReservationRequest | svc.ReleaseReservationRequest,
        reservation_id: str,
        authorize: Authorize,
        ending: Ending,
    ) -> End | None:
        async with self.unit.db.read() as session:
            row = (
                await session.execute(
                    select(store.reservations).where(store.reservations.c.id == reservation_id)
                )
            ).first()
        if row is None:
            raise NotFound(convert.reservation_name(reservation_id), domain=DOMAIN)
        authorize(convert.reservation(row))  # what it holds where never changes: no lock needed
        key = _single_level(row.lines)
        if key is None:
            return None
        claim = None
        if request.request_id:
            claim = Claim(ending.method, request.request_id, request, res.Reservation)
        return End(
            dedupe=claim.key() if claim is not None else None,
            key=key,
            reservation_id=reservation_id,
            ending=ending,
            etag=request.etag,
            claim=claim,
            caller=_caller(request.request_id),
        )

    # --- the group -----------------------------------------------------------------------------

    async def _serve(self, key: Key, members: Sequence[Take | End]) -> None:
        """One transaction for the group; about seven round trips whatever its size."""
        outcomes: dict[int, Any] = {}
        async with self.unit.db.transaction() as session:
            now = utcnow()
            earlier = await claim_many(session, [m.claim for m in members if m.claim is not None])
            live: list[Take | End] = []
            for member in members:
                found = earlier.get(member.claim.key()) if member.claim is not None else None
                if found is None:
                    live.append(member)
                else:
                    outcomes[id(member)] = found
            ends = [m for m in live if isinstance(m, End)]
            takes = [m for m in live if isinstance(m, Take)]
            ended, messages = await self._end_all(session, key, ends, now, outcomes)
            if takes:  # before the level: its lock is taken last
                await bulk.insert_all(
                    session,
                    [
                        (store.reservations, [t.row for t in takes]),
                        (store.reservation_allocations, [a for t in takes for a in t.allocations]),
                    ],
                )
            level = await self._take_level(session, key, ended, takes, now, outcomes)
            journal = MovementJournal(session, self.unit.outbox, now)
            _journal(journal, key, level, ended, takes)
            created = [reservation_message("created", t.response, t.row["create_time"]) for t in takes]
            await journal.flush(extra=[*messages, *created])
            counts = {"committed": 0, "released": 0, "created": len(takes)}
            for end, _ in ended:
                assert end.ending is not None
                counts[end.ending.label] += 1

            def count() -> None:
                for label, n in counts.items():
                    if n:
                        metrics.RESERVATIONS.labels(label).inc(n)

            after_commit(session, count)
        for member in members:
            outcome = outcomes.get(id(member))
            if isinstance(outcome, BaseException):
                member.fail(outcome)
            else:
                member.resolve(outcome)

    async def _end_all(
        self, session: AsyncSession, key: Key, ends: list[End], now: datetime, outcomes: dict[int, Any]
    ) -> tuple[list[tuple[End, int]], list[Message]]:
        """End the reservations the group commits or releases: one statement changes (and locks)
        every one that is ACTIVE, unexpired and at the given etag; the others are looked at
        afterwards. Returns (member, quantity held at the level) of the endings that move stock,
        and their events. Two endings of one reservation are taken in arrival order."""
        if not ends:
            return [], []
        first: dict[str, End] = {}
        for end in ends:
            first.setdefault(end.reservation_id, end)
        applied = list(first.values())
        given = {
            "ids": [e.reservation_id for e in applied],
            "states": [e.ending.state for e in applied],  # type: ignore[union-attr]
            "reasons": [e.values.get("release_reason", "") for e in applied],
            "expiring": [e.ending.check_expiry for e in applied],  # type: ignore[union-attr]
            "versions": [_version(e.etag) for e in applied],
            "now": now,
            "active": ACTIVE,
        }
        rows = {row.id: row for row in await session.execute(_END_MANY, given)}
        missing = [i for i in given["ids"] if i not in rows]
        others: dict[str, Any] = {}
        if missing:
            r = store.reservations
            found = await session.execute(select(r).where(r.c.id.in_(missing)))
            others = {row.id: row for row in found}
        ended: list[tuple[End, int]] = []
        messages: list[Message] = []
        failed: list[End] = []
        for end in ends:
            assert end.ending is not None
            changed = rows.get(end.reservation_id)
            if changed is not None and first[end.reservation_id] is end:
                reservation = convert.reservation(changed)
                outcomes[id(end)] = reservation
                messages.append(reservation_message(end.ending.label, reservation, now))
                held = sum(
                    q
                    for line in changed.lines
                    for loc, q in line["allocations"]
                    if (loc, line["item"]) == key
                )
                ended.append((end, held))
                continue
            row = changed if changed is not None else others.get(end.reservation_id)
            try:
                if row is None:
                    raise NotFound(convert.reservation_name(end.reservation_id), domain=DOMAIN)
                if row.state in end.ending.already:
                    outcomes[id(end)] = convert.reservation(row)
                    continue
                if row.state != ACTIVE:
                    raise not_active(row)
                if end.ending.check_expiry:
                    reservations.require_unexpired(row, now)
                reservations.check_etag(row, end.etag)
                raise AssertionError(f"{end.reservation_id} was ACTIVE but not ended")
            except OmniError as refusal:
                outcomes[id(end)] = refusal
                failed.append(end)
        await forget(session, [e.claim for e in failed if e.claim is not None])
        answers = [
            (e.claim, outcomes[id(e)])
            for e in ends
            if e.claim is not None and isinstance(outcomes.get(id(e)), res.Reservation)
        ]
        await store_answers(session, answers)
        return ended, messages

    async def _take_level(
        self,
        session: AsyncSession,
        key: Key,
        ended: list[tuple[End, int]],
        takes: list[Take],
        now: datetime,
        outcomes: dict[int, Any],
    ) -> Any:
        """The group's one change of the level (the hot row, locked last); the row after it.

        Refused takes are removed from ``takes`` and their rows deleted again."""
        if not ended and not takes:
            return None
        location_id, sku = key
        committed = sum(q for e, q in ended if e.ending is reservations.COMMIT)
        released = sum(q for e, q in ended if e.ending is not reservations.COMMIT)
        change = {
            "loc": location_id,
            "sku": sku,
            "on_hand": -committed,
            "back": -(committed + released),
            "asked": sum(t.quantity for t in takes),
            "now": now,
        }
        level = (await session.execute(_CHANGE_LEVEL, change)).first()
        if level is not None:
            for take in takes:
                outcomes[id(take)] = take.response
            return level
        # Not enough for every take: first come, first served, on the row as it is (locked now).
        current = await store.level(session, location_id, sku, lock=True)
        if current is None:
            if ended:
                raise LookupError(f"stock level {location_id}/{sku} vanished")
            left = 0
        else:
            left = (
                current.on_hand - committed - (current.reserved - committed - released) - current.safety_stock
            )
        served: list[Take] = []
        refused: list[Take] = []
        for take in takes:
            if take.quantity <= left:
                served.append(take)
                left -= take.quantity
                outcomes[id(take)] = take.response
            else:
                refused.append(take)
                outcomes[id(take)] = _refusal(take, sku, location_id, max(0, left))
        await self._unwrite(session, refused)
        takes[:] = served
        if current is None:
            return None
        change["asked"] = sum(t.quantity for t in served)
        return (await session.execute(_CHANGE_LEVEL_UNGUARDED, change)).first()

    @staticmethod
    async def _unwrite(session: AsyncSession, refused: list[Take]) -> None:
        """Remove the rows written for takes that did not fit (a failed call stores nothing)."""
        if not refused:
            return
        ids = [t.row["id"] for t in refused]
        alloc = store.reservation_allocations
        await session.execute(delete(alloc).where(alloc.c.reservation_id.in_(ids)))
        await session.execute(delete(store.reservations).where(store.reservations.c.id.in_(ids)))
        await forget(session, [t.claim for t in refused if t.claim is not None])


def _version(etag: str) -> int:
    """The version an etag names (0: none given, -1: one this server never issued)."""
    if not etag:
        return 0
    version = convert.version_of(etag)
    return -1 if version is None else version


# The endings of a group, in one statement: each reservation changes only if it is ACTIVE, not
# past its expiry when that matters, and at the version its etag names (0: any).
_END_MANY = text(
    "UPDATE reservations r SET state = g.state, release_reason = g.reason, version = r.version + 1,"
    " update_time = :now"
    " FROM unnest(CAST(:ids AS text[]), CAST(:states AS smallint[]), CAST(:reasons AS text[]),"
    " CAST(:expiring AS boolean[]), CAST(:versions AS bigint[])) AS g(id, state, reason, expiring, version)"
    " WHERE r.id = g.id AND r.state = :active AND (NOT g.expiring OR r.expire_time > :now)"
    " AND (g.version = 0 OR r.version = g.version)"
    " RETURNING r.*"
)
# The level's one change: endings give back (and commits take out of on_hand), takes reserve;
# guarded so the takes fit in what is left after the endings.
_LEVEL_SET = (
    "UPDATE stock_levels SET on_hand = on_hand + :on_hand, reserved = reserved + :back + :asked,"
    " version = version + 1, update_time = :now WHERE location_id = :loc AND item_sku = :sku"
)
_LEVEL_RETURNING = (
    " RETURNING location_id, item_sku, on_hand, reserved, safety_stock, low_stock_threshold,"
    " version, update_time"
)
_CHANGE_LEVEL = text(
    _LEVEL_SET + " AND on_hand + :on_hand - (reserved + :back) - safety_stock >= :asked" + _LEVEL_RETURNING
)
_CHANGE_LEVEL_UNGUARDED = text(_LEVEL_SET + _LEVEL_RETURNING)


def _refusal(take: Take, sku: str, location_id: str, available: int) -> OmniError | _Replan:
    if not take.fixed:
        return REPLAN
    assert take.spec is not None
    return insufficient(
        [
            allocation.Shortfall(line.index, sku, line.quantity, available, line.location)
            for line in take.spec.lines
            if line.item == sku
        ]
    )


def _journal(
    journal: MovementJournal, key: Key, level: Any, ended: list[tuple[End, int]], takes: list[Take]
) -> None:
    """One movement per member, in the order the group applied them: endings, then takes."""
    if level is None:
        return
    committed = sum(q for e, q in ended if e.ending is reservations.COMMIT)
    released = sum(q for e, q in ended if e.ending is not reservations.COMMIT)
    on_hand = level.on_hand + committed
    reserved = level.reserved + committed + released - sum(t.quantity for t in takes)
    location_id, sku = key

    def after(on_hand_now: int, reserved_now: int) -> SimpleNamespace:
        return SimpleNamespace(
            location_id=location_id,
            item_sku=sku,
            on_hand=on_hand_now,
            reserved=reserved_now,
            safety_stock=level.safety_stock,
            low_stock_threshold=level.low_stock_threshold,
            version=level.version,
        )

    for end, quantity in ended:
        assert end.ending is not None
        on_hand_delta = -quantity if end.ending is reservations.COMMIT else 0
        on_hand += on_hand_delta
        reserved -= quantity
        journal.record(
            after(on_hand, reserved),
            end.ending.movement,
            on_hand_delta,
            -quantity,
            reason=end.reason,
            reference=end.reference,
            reservation_id=end.reservation_id,
            caller=end.caller,
        )
    for take in takes:
        reserved += take.quantity
        journal.record(
            after(on_hand, reserved),
            res.MOVEMENT_KIND_RESERVATION,
            0,
            take.quantity,
            reservation_id=take.row["id"],
            caller=take.caller,
        )


def _held(lines: Sequence[dict[str, Any]], key: Key) -> int:
    """Units a reservation's stored lines hold at one level."""
    return sum(q for line in lines for location, q in line["allocations"] if (location, line["item"]) == key)


def _single_level(lines: Sequence[dict[str, Any]]) -> Key | None:
    """The one (location, item) a reservation's stored lines hold stock at, if only one."""
    keys = {(location, line["item"]) for line in lines for location, _ in line["allocations"]}
    return next(iter(keys)) if len(keys) == 1 else None
