"""Segments: rules compiled to SQL, membership kept current incrementally, recomputed in the
database, and a time pass for ``days_since`` rules.

- **Incremental**: every timeline batch or profile change calls ``evaluate(session, customers)``,
  which runs each dynamic segment's predicate over those customers only (one statement per
  segment: insert the joins, delete the leaves, write their events).
- **Recompute**: RecomputeSegment (or a changed rule) marks the segment COMPUTING; the worker
  loop runs the same statement over every profile, in the database, with the
  SegmentMembershipChangedEvent payloads built in SQL (``profile_membership_event``), so
  100,000 profiles never pass through Python.
- **Time pass**: a ``days_since(f) < 90`` rule changes truth when ``f`` crosses ``now - 90 days``.
  The pass evaluates only the profiles whose ``f`` lies between the previous pass's boundary and
  this one's (an index range per atom), for dynamic segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, SMALLINT, insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.profile.v1 import events_pb2 as ev
from omni.profile.v1 import resources_pb2 as r
from omni_runtime.db.engine import Database, after_commit
from omni_runtime.db.schema import outbox
from omni_runtime.events.bus import subject_for
from omni_runtime.timestamps import utcnow
from services.profile import metrics
from services.profile.domain import rules
from services.profile.store import profiles, segment_members, segments

log = logging.getLogger("omni.profile.segments")
Segment = r.Segment
Change = ev.SegmentMembershipChangedEvent
EVENT = ev.SegmentMembershipChangedEvent.DESCRIPTOR.full_name
SUBJECT = subject_for(EVENT)
DAY = timedelta(days=1)

_COLUMNS: dict[str, Any] = {
    "given_name": profiles.c.given_name,
    "family_name": profiles.c.family_name,
    "display_name": profiles.c.display_name,
    "language_code": profiles.c.language_code,
    "birthday.month": profiles.c.birthday_month,
    "birthday.day": profiles.c.birthday_day,
    "state": profiles.c.state,
    "contact_points.kind": profiles.c.contact_kinds,
    "lifetime.order_count": profiles.c.order_count,
    "lifetime.first_purchase_time": profiles.c.first_purchase_time,
    "lifetime.last_purchase_time": profiles.c.last_purchase_time,
    "lifetime.last_interaction_time": profiles.c.last_interaction_time,
    "lifetime.average_days_between_purchases": profiles.c.avg_days_between,
    "lifetime.channels_used.channel": profiles.c.channels,
}


def _compare(expr: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "=":
        return expr == value  # type: ignore[no-any-return]
    if op == "!=":
        return expr.is_distinct_from(value)  # type: ignore[no-any-return]
    if op == "<":
        return expr < value  # type: ignore[no-any-return]
    if op == "<=":
        return expr <= value  # type: ignore[no-any-return]
    if op == ">":
        return expr > value  # type: ignore[no-any-return]
    return expr >= value  # type: ignore[no-any-return]


def _days_since(atom: rules.DaysSince, now: datetime) -> ColumnElement[bool]:
    """``floor((now - f) / 1 day) op N`` as a range on ``f`` (index-friendly)."""
    f = _COLUMNS[atom.field]
    n = atom.days

    def within(d: int) -> ColumnElement[bool]:  # fewer than d whole days ago
        return f > now - d * DAY  # type: ignore[no-any-return]

    def beyond(d: int) -> ColumnElement[bool]:  # at least d whole days ago
        return f <= now - d * DAY  # type: ignore[no-any-return]

    if atom.op == "<":
        out = within(n)
    elif atom.op == "<=":
        out = within(n + 1)
    elif atom.op == ">":
        out = beyond(n + 1)
    elif atom.op == ">=":
        out = beyond(n)
    elif atom.op == "=":
        out = and_(beyond(n), within(n + 1))
    else:
        out = and_(f.is_not(None), not_(and_(beyond(n), within(n + 1))))
    return func.coalesce(out, false())


def compile_rule(node: rules.Node, now: datetime) -> ColumnElement[bool]:
    """The rule as a two-valued SQL predicate over ``profiles`` (NULL counts as false)."""
    if isinstance(node, rules.All):
        return and_(*(compile_rule(n, now) for n in node.operands))
    if isinstance(node, rules.Any_):
        return or_(*(compile_rule(n, now) for n in node.operands))
    if isinstance(node, rules.Not):
        return not_(compile_rule(node.operand, now))
    if isinstance(node, rules.DaysSince):
        return _days_since(node, now)
    name, op, value = node.field, node.op, node.value
    if name.startswith(rules.TRAIT_PREFIX):
        expr: Any = profiles.c.traits[name[len(rules.TRAIT_PREFIX) :]].astext
        return func.coalesce(_compare(expr, op, value), false())
    if name.startswith(rules.SPEND_PREFIX):
        expr = func.coalesce(cast(profiles.c.spend[name[len(rules.SPEND_PREFIX) :]].astext, BigInteger), 0)
        return _compare(expr, op, value)
    column = _COLUMNS[name]
    if op == ":":
        return column.contains(cast([value], ARRAY(SMALLINT)))  # type: ignore[no-any-return]
    return func.coalesce(_compare(column, op, value), false())


@dataclass(frozen=True)
class Compiled:
    id: str
    tree: rules.Node
    mode: int


class Segments:
    """Membership maintenance; the CRUD use cases live in segment_admin.py."""

    def __init__(self, db: Database | None, *, pass_interval: float = 3600.0) -> None:
        self.db = db
        self.pass_interval = pass_interval
        self._cache: tuple[int, list[Compiled]] | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def dynamic(self, session: AsyncSession) -> list[Compiled]:
        """The dynamic segments' parsed rules, re-read only when a segment changed."""
        stamp = (
            await session.execute(select(func.coalesce(func.sum(segments.c.version), 0) + func.count()))
        ).scalar_one()
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        rows = (await session.execute(select(segments.c.id, segments.c.filter, segments.c.mode))).all()
        compiled = []
        for row in rows:
            try:
                compiled.append(Compiled(row.id, rules.parse(row.filter), row.mode))
            except rules.RuleError:
                log.error("segment %s has a rule that no longer parses; skipped", row.id)
        self._cache = (int(stamp), compiled)
        return compiled

    async def evaluate(self, session: AsyncSession, customers: Sequence[str]) -> None:
        """Re-evaluate every dynamic segment for these customers (incremental update)."""
        if not customers:
            return
        now = utcnow()
        for seg in await self.dynamic(session):
            if seg.mode == Segment.MODE_SNAPSHOT:
                continue
            await apply_membership(session, seg, now, Change.CAUSE_PROFILE_CHANGED, customers=customers)
        after_commit(session, lambda: metrics.SEGMENT_EVALUATIONS.labels("incremental").inc())

    async def remove(self, session: AsyncSession, customers: Sequence[str]) -> None:
        """The customers were merged away or erased: they leave every segment."""
        if not customers:
            return
        now = utcnow()
        await apply_membership(session, None, now, Change.CAUSE_CUSTOMER_REMOVED, customers=customers)

    # -- background work --------------------------------------------------------------------

    async def run(self) -> None:
        """Recompute segments marked COMPUTING; run the time pass every ``pass_interval``."""
        assert self.db is not None
        last_pass = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                while await self.recompute_next():
                    pass
                if loop.time() - last_pass >= self.pass_interval:
                    await self.time_pass()
                    last_pass = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("segment work failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def recompute_next(self) -> bool:
        """Recompute one COMPUTING segment (claimed with SKIP LOCKED); False when none waits."""
        assert self.db is not None
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(segments.c.id, segments.c.filter, segments.c.mode)
                    .where(segments.c.state == Segment.STATE_COMPUTING)
                    .order_by(segments.c.update_time)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if row is None:
                return False
            now = utcnow()
            try:
                tree = rules.parse(row.filter)
            except rules.RuleError as exc:
                await session.execute(
                    update(segments)
                    .where(segments.c.id == row.id)
                    .values(state=Segment.STATE_FAILED, compute_error=str(exc))
                )
                return True
            await apply_membership(session, Compiled(row.id, tree, row.mode), now, Change.CAUSE_RECOMPUTED)
            count = (
                await session.execute(select(func.count()).where(segment_members.c.segment == row.id))
            ).scalar_one()
            await session.execute(
                update(segments)
                .where(segments.c.id == row.id)
                .values(
                    state=Segment.STATE_READY,
                    compute_error=None,
                    member_count=count,
                    last_compute_time=now,
                    time_pass_time=now,
                )
            )
        metrics.SEGMENT_EVALUATIONS.labels("recompute").inc()
        return True

    async def time_pass(self, now: datetime | None = None) -> int:
        """Re-evaluate dynamic days_since segments for the profiles whose time field crossed a
        boundary since the last pass; returns how many segments were looked at."""
        assert self.db is not None
        now = now or utcnow()
        done = 0
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(segments.c.id, segments.c.filter, segments.c.mode, segments.c.time_pass_time)
                    .where(segments.c.mode != Segment.MODE_SNAPSHOT, segments.c.state == Segment.STATE_READY)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                try:
                    tree = rules.parse(row.filter)
                except rules.RuleError:
                    continue
                atoms = rules.days_since_atoms(tree)
                if not atoms:
                    continue
                since = row.time_pass_time or now - timedelta(days=3650)
                crossed = [
                    and_(
                        _COLUMNS[a.field] > since - (a.days + 1) * DAY,
                        _COLUMNS[a.field] <= now - a.days * DAY,
                    )
                    for a in atoms
                ]
                await apply_membership(
                    session,
                    Compiled(row.id, tree, row.mode),
                    now,
                    Change.CAUSE_PROFILE_CHANGED,
                    candidates=or_(*crossed),
                )
                await session.execute(
                    update(segments).where(segments.c.id == row.id).values(time_pass_time=now)
                )
                done += 1
        if done:
            metrics.SEGMENT_EVALUATIONS.labels("time_pass").inc(done)
        return done


async def apply_membership(
    session: AsyncSession,
    seg: Compiled | None,
    now: datetime,
    cause: int,
    *,
    customers: Sequence[str] | None = None,
    candidates: ColumnElement[bool] | None = None,
) -> tuple[int, int]:
    """Make the segment's members match its rule over the scope (given customers, profiles
    matching ``candidates``, or everyone), with one event per join and leave, in one statement.
    With ``seg`` None the customers leave every segment. Returns (joined, left)."""
    if seg is None:
        return await _leave_all(session, customers or (), now, cause)
    scope: list[ColumnElement[bool]] = []
    if customers is not None:
        scope.append(profiles.c.customer.in_(list(customers)))
    if candidates is not None:
        scope.append(candidates)
    matching = (
        select(profiles.c.customer)
        .where(*scope, profiles.c.state == r.Profile.STATE_ACTIVE, compile_rule(seg.tree, now))
        .cte("matching")
    )
    joined = (
        insert(segment_members)
        .from_select(
            ["segment", "customer", "join_time"],
            select(literal(seg.id), matching.c.customer, literal(now)),
        )
        .on_conflict_do_nothing()
        .returning(segment_members.c.customer, literal(Change.CHANGE_JOINED).label("change"))
        .cte("joined")
    )
    in_scope: list[ColumnElement[bool]] = [segment_members.c.segment == seg.id]
    if customers is not None:
        in_scope.append(segment_members.c.customer.in_(list(customers)))
    if candidates is not None:
        in_scope.append(segment_members.c.customer.in_(select(profiles.c.customer).where(candidates)))
    left = (
        segment_members.delete()
        .where(*in_scope, ~segment_members.c.customer.in_(select(matching.c.customer)))
        .returning(segment_members.c.customer, literal(Change.CHANGE_LEFT).label("change"))
        .cte("left_members")
    )
    changes = union_all(
        select(joined.c.customer, joined.c.change), select(left.c.customer, left.c.change)
    ).cte("changes")
    events = (
        insert(outbox)
        .from_select(
            ["id", "subject", "event_type", "payload", "headers"],
            select(
                func.gen_random_uuid(),
                literal(SUBJECT),
                literal(EVENT),
                func.profile_membership_event(
                    literal(f"segments/{seg.id}"),
                    literal("customers/") + changes.c.customer,
                    changes.c.change,
                    cause,
                    now,
                ),
                cast(literal("{}"), outbox.c.headers.type),
            ).select_from(changes),
        )
        .returning(outbox.c.id)
        .cte("events")
    )
    statement = select(
        select(func.count()).select_from(joined).scalar_subquery(),
        select(func.count()).select_from(left).scalar_subquery(),
        select(func.count()).select_from(events).scalar_subquery(),
    )
    n_joined, n_left, _ = (await session.execute(statement)).one()
    if customers is not None and (n_joined or n_left):
        await session.execute(
            update(segments)
            .where(segments.c.id == seg.id)
            .values(member_count=segments.c.member_count + n_joined - n_left)
        )
    if n_joined or n_left:

        def count() -> None:
            metrics.SEGMENT_CHANGES.labels("joined").inc(n_joined)
            metrics.SEGMENT_CHANGES.labels("left").inc(n_left)

        after_commit(session, count)
    # Rows written to the outbox by SQL are published by the relay's next poll (within a second).
    return int(n_joined), int(n_left)


async def _leave_all(
    session: AsyncSession, customers: Sequence[str], now: datetime, cause: int
) -> tuple[int, int]:
    left = (
        segment_members.delete()
        .where(segment_members.c.customer.in_(list(customers)))
        .returning(segment_members.c.segment, segment_members.c.customer)
        .cte("left_members")
    )
    events = (
        insert(outbox)
        .from_select(
            ["id", "subject", "event_type", "payload", "headers"],
            select(
                func.gen_random_uuid(),
                literal(SUBJECT),
                literal(EVENT),
                func.profile_membership_event(
                    literal("segments/") + left.c.segment,
                    literal("customers/") + left.c.customer,
                    Change.CHANGE_LEFT,
                    cause,
                    now,
                ),
                cast(literal("{}"), outbox.c.headers.type),
            ).select_from(left),
        )
        .returning(outbox.c.payload)
        .cte("events")
    )
    counts = (
        await session.execute(select(left.c.segment, func.count()).group_by(left.c.segment).add_cte(events))
    ).all()
    # The events CTE runs with the statement whether or not its rows are read.
    for segment, n in sorted(counts):
        await session.execute(
            update(segments).where(segments.c.id == segment).values(member_count=segments.c.member_count - n)
        )
    return 0, sum(n for _, n in counts)
