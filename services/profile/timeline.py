"""The interaction timeline and the lifetime figures it keeps current.

Everything that records interactions goes through ``Timeline.apply``: RecordInteraction (one
row) and the event consumers (a batch of rows per transaction, see events.py). One batch is a
handful of set-based statements whatever its size: insert the interactions, upsert channel
usage, fold the facts into the profiles, recompute the purchase figures of the customers whose
orders changed, and re-evaluate dynamic segments for the touched customers only.

Figures are commutative aggregates (counts, sums, minimum and maximum times) and purchases are
upserted by order, so the same events delivered in any order give the same figures; a
redelivered event never reaches this module (the consumer's inbox drops it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.profile.v1 import resources_pb2 as r
from omni_runtime.db.engine import after_commit
from services.profile import metrics
from services.profile.store import channel_usage, interactions, profiles, purchases

log = logging.getLogger("omni.profile.timeline")
ACTIVE = r.Profile.STATE_ACTIVE
MERGED = r.Profile.STATE_MERGED
ERASED = r.Profile.STATE_ERASED
ORDER_PLACED = r.Interaction.TYPE_ORDER_PLACED


@dataclass
class NewInteraction:
    """One touchpoint to record, for customer id ``customer`` (bare)."""

    customer: str
    type: int
    occur_time: datetime
    channel: int = 0
    store: str = ""
    device: str = ""
    subject: str = ""
    summary: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    staff_member: str = ""
    visit_id: str = ""
    recorded_by: str = ""
    # Where this came from, for the events-applied metric ("cart.order_placed", "rpc").
    source: str = "rpc"


@dataclass
class PurchaseChange:
    """A fact about an order: placed (with its total), cancelled, or refunded in part."""

    order_key: str
    customer: str
    currency: str = ""
    total: int = 0
    channel: int = 0
    placed_time: datetime | None = None
    cancelled: bool = False
    refund: int = 0


async def resolve(session: AsyncSession, customers: Iterable[str]) -> dict[str, str | None]:
    """Where each customer's data goes now: itself, the profile it was merged into (following
    chains), or None when erased (data arriving after an erasure is dropped)."""
    out: dict[str, str | None] = {c: c for c in customers}
    pending = set(out)
    redirect: dict[str, str] = {}
    for _ in range(10):
        if not pending:
            break
        rows = (
            await session.execute(
                select(profiles.c.customer, profiles.c.state, profiles.c.merged_into).where(
                    profiles.c.customer.in_(sorted(pending)), profiles.c.state != ACTIVE
                )
            )
        ).all()
        pending = set()
        for row in rows:
            if row.state == ERASED:
                redirect[row.customer] = ""
            elif row.state == MERGED and row.merged_into:
                redirect[row.customer] = row.merged_into
                pending.add(row.merged_into)
    for customer in out:
        seen = customer
        for _ in range(10):
            nxt = redirect.get(seen)
            if nxt is None:
                break
            seen = nxt
            if not seen:
                break
        out[customer] = seen or None
    return out


async def lock_profiles(session: AsyncSession, customers: Iterable[str]) -> None:
    """Make sure the profile rows exist and lock them in one order (no deadlocks between the
    consumers of different services touching the same customer)."""
    wanted = sorted(set(customers))
    if not wanted:
        return
    await session.execute(
        insert(profiles).values([{"customer": c, "state": ACTIVE} for c in wanted]).on_conflict_do_nothing()
    )
    await session.execute(
        select(profiles.c.customer)
        .where(profiles.c.customer.in_(wanted))
        .order_by(profiles.c.customer)
        .with_for_update()
    )


class Timeline:
    def __init__(self, segments: Any) -> None:
        # segments.Segments; typed loosely to keep the import graph one-way.
        self.segments = segments

    async def apply(
        self,
        session: AsyncSession,
        new: Sequence[NewInteraction],
        changes: Sequence[PurchaseChange] = (),
    ) -> list[tuple[NewInteraction, int]]:
        """Record ``new`` and ``changes`` in the caller's transaction; returns the recorded
        interactions with their ids (dropped ones, for erased customers, are left out)."""
        where = await resolve(session, {i.customer for i in new} | {c.customer for c in changes})
        kept = [(i, where[i.customer]) for i in new if where[i.customer] is not None]
        moved = [(c, where[c.customer]) for c in changes if where[c.customer] is not None]
        touched = sorted({t for _, t in kept if t} | {t for _, t in moved if t})
        if not touched:
            return []
        await lock_profiles(session, touched)
        recorded: list[tuple[NewInteraction, int]] = []
        if kept:
            recorded = await self._insert(session, kept)
            await self._fold(session, kept)
        if moved:
            await self._purchases(session, moved)
        purchase_customers = {t for c, t in moved if t} | {t for i, t in kept if t and i.type == ORDER_PLACED}
        if purchase_customers:
            await recompute_purchases(session, purchase_customers)
        await self.segments.evaluate(session, touched)
        sources: dict[str, int] = {}
        for item, _ in kept:
            sources[item.source] = sources.get(item.source, 0) + 1

        def count() -> None:
            for s, n in sources.items():
                metrics.EVENTS_APPLIED.labels(s).inc(n)

        after_commit(session, count)
        return recorded

    async def _insert(
        self, session: AsyncSession, kept: list[tuple[NewInteraction, str | None]]
    ) -> list[tuple[NewInteraction, int]]:
        rows = [
            {
                "customer": target,
                "origin": item.customer,
                "type": item.type,
                "channel": item.channel,
                "store": item.store,
                "device": item.device,
                "occur_time": item.occur_time,
                "subject": item.subject,
                "summary": item.summary,
                "attributes": item.attributes,
                "staff_member": item.staff_member,
                "visit_id": item.visit_id,
                "recorded_by": item.recorded_by,
            }
            for item, target in kept
        ]
        ids = (
            (await session.execute(insert(interactions).values(rows).returning(interactions.c.id)))
            .scalars()
            .all()
        )
        return [(item, int(i)) for (item, _), i in zip(kept, ids, strict=True)]

    async def _fold(self, session: AsyncSession, kept: list[tuple[NewInteraction, str | None]]) -> None:
        usage: dict[tuple[str, int], list[Any]] = {}
        latest: dict[str, datetime] = {}
        for item, target in kept:
            assert target is not None
            if item.channel:
                entry = usage.setdefault((target, item.channel), [0, item.occur_time, item.occur_time])
                entry[0] += 1
                entry[1] = min(entry[1], item.occur_time)
                entry[2] = max(entry[2], item.occur_time)
            if target not in latest or latest[target] < item.occur_time:
                latest[target] = item.occur_time
        if usage:
            stmt = insert(channel_usage).values(
                [
                    {
                        "customer": c,
                        "channel": ch,
                        "interaction_count": n,
                        "first_seen": first,
                        "last_seen": last,
                    }
                    for (c, ch), (n, first, last) in sorted(usage.items())
                ]
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[channel_usage.c.customer, channel_usage.c.channel],
                    set_={
                        "interaction_count": channel_usage.c.interaction_count
                        + stmt.excluded.interaction_count,
                        "first_seen": func.least(channel_usage.c.first_seen, stmt.excluded.first_seen),
                        "last_seen": func.greatest(channel_usage.c.last_seen, stmt.excluded.last_seen),
                    },
                )
            )
        channels: dict[str, set[int]] = {}
        for c, ch in usage:
            channels.setdefault(c, set()).add(ch)
        ordered = sorted(latest)
        await session.execute(
            _FOLD,
            {
                "customers": ordered,
                "times": [latest[c] for c in ordered],
                "channels": ["{" + ",".join(map(str, sorted(channels.get(c, ())))) + "}" for c in ordered],
            },
        )

    async def _purchases(self, session: AsyncSession, moved: list[tuple[PurchaseChange, str | None]]) -> None:
        for change, target in sorted(moved, key=lambda m: m[0].order_key):
            values: dict[str, Any] = {
                "order_key": change.order_key,
                "customer": target,
                "origin": change.customer,
            }
            if change.placed_time is not None:
                values |= {
                    "currency": change.currency,
                    "total": change.total,
                    "channel": change.channel,
                    "placed_time": change.placed_time,
                }
            stmt = insert(purchases).values(
                {**values, "cancelled": change.cancelled, "refunded": change.refund}
            )
            updates: dict[str, Any] = {
                k: stmt.excluded[k] for k in values if k not in ("order_key", "customer", "origin")
            }
            if change.cancelled:
                updates["cancelled"] = True
            if change.refund:
                updates["refunded"] = purchases.c.refunded + change.refund
            if updates:
                await session.execute(
                    stmt.on_conflict_do_update(index_elements=[purchases.c.order_key], set_=updates)
                )
            else:
                await session.execute(stmt.on_conflict_do_nothing())


_FOLD = text(
    """
UPDATE profiles p SET
  last_interaction_time = greatest(p.last_interaction_time, v.t),
  channels = ARRAY(SELECT DISTINCT x FROM unnest(p.channels || v.chs) AS x ORDER BY 1)
FROM (
  SELECT unnest(CAST(:customers AS text[])) AS customer, unnest(CAST(:times AS timestamptz[])) AS t,
         CAST(unnest(CAST(:channels AS text[])) AS smallint[]) AS chs
) v
WHERE p.customer = v.customer
"""
)

_RECOMPUTE = text(
    """
UPDATE profiles p SET
  order_count = coalesce(a.n, 0),
  first_purchase_time = a.first,
  last_purchase_time = a.last,
  avg_days_between = CASE WHEN a.n > 1
    THEN extract(epoch FROM a.last - a.first) / 86400.0 / (a.n - 1) ELSE 0 END,
  spend = coalesce(a.spend, '{}'::jsonb),
  spend_orders = coalesce(a.spend_orders, '{}'::jsonb),
  lifetime_time = now()
FROM unnest(CAST(:customers AS text[])) AS x(customer)
LEFT JOIN (
  SELECT c.customer, sum(c.n)::int AS n, min(c.first) AS first, max(c.last) AS last,
         jsonb_object_agg(c.currency, c.net) FILTER (WHERE c.currency <> '') AS spend,
         jsonb_object_agg(c.currency, c.n) FILTER (WHERE c.currency <> '') AS spend_orders
  FROM (
    SELECT customer, currency, count(*) AS n, min(placed_time) AS first, max(placed_time) AS last,
           sum(total - refunded) AS net
    FROM purchases
    WHERE customer = ANY(CAST(:customers AS text[])) AND placed_time IS NOT NULL AND NOT cancelled
    GROUP BY customer, currency
  ) c
  GROUP BY c.customer
) a ON a.customer = x.customer
WHERE p.customer = x.customer
"""
)


async def recompute_purchases(session: AsyncSession, customers: Iterable[str]) -> None:
    """The purchase figures of these customers from their purchases (one statement)."""
    await session.execute(_RECOMPUTE, {"customers": sorted(set(customers))})


_RECOMPUTE_ACTIVITY = text(
    """
INSERT INTO channel_usage (customer, channel, interaction_count, first_seen, last_seen)
SELECT customer, channel, count(*), min(occur_time), max(occur_time)
FROM interactions WHERE customer = ANY(CAST(:customers AS text[])) AND channel <> 0
GROUP BY customer, channel
"""
)
_ACTIVITY_PROFILE = text(
    """
UPDATE profiles p SET
  channels = coalesce(
    (SELECT array_agg(channel ORDER BY channel) FROM channel_usage u WHERE u.customer = p.customer), '{}'),
  last_interaction_time = (SELECT max(occur_time) FROM interactions i WHERE i.customer = p.customer)
WHERE p.customer = ANY(CAST(:customers AS text[]))
"""
)


async def recompute_all(session: AsyncSession, customers: Iterable[str]) -> None:
    """Every figure of these customers from their rows (after a merge, unmerge or erasure)."""
    wanted = sorted(set(customers))
    await session.execute(
        text("DELETE FROM channel_usage WHERE customer = ANY(CAST(:customers AS text[]))"),
        {"customers": wanted},
    )
    await session.execute(_RECOMPUTE_ACTIVITY, {"customers": wanted})
    await session.execute(_ACTIVITY_PROFILE, {"customers": wanted})
    await recompute_purchases(session, wanted)
