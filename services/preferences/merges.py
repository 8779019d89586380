"""Consent-safe merges of two customers (identity's guest merge at log-in, profile's merge of
duplicates): the rule is ``domain.merge``; this applies it.

In one transaction, with both customers' locks (taken in id order, so two merges cannot
deadlock): the survivor's consents change as the rule says, each change with a ledger entry
whose evidence names the merge; the absorbed customer's marketing contacts count against the
survivor's caps from then on; the survivor adopts the absorbed customer's preferences if it has
none of its own; the absorbed customer can no longer be contacted and its open double opt-in
tokens are superseded. A merge already applied (the same pair arrives from identity and then
from profile) changes nothing. What the survivor had before is kept on the merge record.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime.context import ChannelInfo
from omni_runtime.timestamps import utcnow
from services.preferences import consents, store
from services.preferences.domain import merge as rule
from services.preferences.txn import Unit

c = store.consents


def _records(rows: list[Any]) -> list[rule.Record]:
    return [rule.Record(r.channel, r.topic, r.state, r.legal_basis, r.id) for r in rows]


async def merge_customers(
    session: AsyncSession,
    unit: Unit,
    *,
    source_id: str,
    target_id: str,
    recorded_by: str,
    why: str,
    channel: ChannelInfo,
) -> int:
    """Merge ``source_id`` into ``target_id``; returns how many of the survivor's consents changed."""
    m = store.merges
    for customer_id in sorted((source_id, target_id)):
        await store.lock_customer(session, customer_id)
    done = (
        await session.execute(
            select(m.c.id).where(
                m.c.source_customer == source_id, m.c.target_customer == target_id, ~m.c.undone
            )
        )
    ).first()
    if done is not None:
        return 0
    now = utcnow()
    source_rows = list((await session.execute(select(c).where(c.c.customer_id == source_id))).all())
    target_rows = list((await session.execute(select(c).where(c.c.customer_id == target_id))).all())
    by_key = {(r.channel, r.topic): r for r in target_rows}
    evidence = f"merge of customers/{source_id} into customers/{target_id} ({why})"
    changes = rule.merge(_records(target_rows), _records(source_rows))
    for change in changes:
        await consents.write(
            session,
            unit,
            customer_id=target_id,
            channel=change.channel,
            topic=change.topic,
            state=change.winner.state,
            legal_basis=change.winner.legal_basis,
            source=consents.Source(channel, recorded_by, evidence),
            now=now,
            current=by_key.get((change.channel, change.topic)),
            cause="merge",
        )
    k = store.contacts
    await session.execute(
        k.insert().from_select(
            ["customer_id", "channel", "topic", "contact_time", "request_id"],
            select(literal(target_id), k.c.channel, k.c.topic, k.c.contact_time, k.c.request_id).where(
                k.c.customer_id == source_id
            ),
        )
    )
    await _adopt_preferences(session, source_id, target_id)
    await session.execute(
        insert(store.customer_states)
        .values(
            customer_id=source_id, state=store.MERGED, merged_into=f"customers/{target_id}", update_time=now
        )
        .on_conflict_do_update(
            index_elements=[store.customer_states.c.customer_id],
            set_={"state": store.MERGED, "merged_into": f"customers/{target_id}", "update_time": now},
            where=store.customer_states.c.state == store.MERGED,
        )
    )
    t = store.confirmation_tokens
    await session.execute(
        update(t)
        .where(t.c.customer_id == source_id, t.c.state == consents.TokenState.OPEN)
        .values(state=consents.TokenState.SUPERSEDED)
    )
    await session.execute(
        m.insert().values(
            id=uuid.uuid4().hex,
            source_customer=source_id,
            target_customer=target_id,
            target_before=[_snapshot(r) for r in target_rows],
            changed=[[ch.channel, ch.topic] for ch in changes],
            merge_time=now,
        )
    )
    return len(changes)


def _snapshot(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel": row.channel,
        "topic": row.topic,
        "state": row.state,
        "legal_basis": row.legal_basis,
        "version": row.version,
    }


async def _adopt_preferences(session: AsyncSession, source_id: str, target_id: str) -> None:
    p = store.preferences
    if (
        await session.execute(select(p.c.customer_id).where(p.c.customer_id == target_id))
    ).first() is not None:
        return
    await session.execute(
        insert(p)
        .from_select(
            [col.name for col in p.c],
            select(*(literal(target_id) if col.name == "customer_id" else col for col in p.c)).where(
                p.c.customer_id == source_id
            ),
        )
        .on_conflict_do_nothing()
    )
