"""Consent-safe merges of two customers (identity's guest merge at log-in, profile's merge of
duplicates) and profile's unmerge. The merge rule is ``domain.merge``; this applies it.

Merge, in one transaction with both customers' locks (taken in id order, so two merges cannot
deadlock): the survivor's consents change as the rule says, each change with a ledger entry
whose evidence names the merge; the absorbed customer's marketing contacts count against the
survivor's caps; the survivor adopts the absorbed customer's preferences if it has none; the
absorbed customer can no longer be contacted and its open double opt-in tokens are superseded.
A merge already applied (the same pair arrives from identity and then from profile) changes
nothing. The merge record keeps what the survivor had before and what the merge wrote.

Unmerge (profile's ProfilesUnmergedEvent) gives each side back its consents as they were, plus
what it gained since:
- the absorbed customer's own consents were never touched; it becomes contactable again;
- each survivor consent the merge wrote and nobody changed since returns to its state before
  the merge (or to "never recorded" when the merge created it), with a ledger entry; a consent
  changed since the merge (the customer's own later decision) is kept as it is now;
- the copied contacts go, and adopted preferences the survivor has not changed since go too.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime.context import ChannelInfo
from omni_runtime.timestamps import utcnow
from services.preferences import consents, store
from services.preferences.domain import merge as rule
from services.preferences.txn import Unit

c, m, k, p = store.consents, store.merges, store.contacts, store.preferences


def _records(rows: list[Any]) -> list[rule.Record]:
    return [rule.Record(r.channel, r.topic, r.state, r.legal_basis, r.id) for r in rows]


async def _lock_pair(session: AsyncSession, a: str, b: str) -> None:
    for customer_id in sorted((a, b)):
        await store.lock_customer(session, customer_id)


async def _open_merge(session: AsyncSession, source_id: str, target_id: str) -> Any:
    statement = (
        select(m)
        .where(m.c.source_customer == source_id, m.c.target_customer == target_id, ~m.c.undone)
        .order_by(m.c.merge_time.desc())
        .limit(1)
    )
    return (await session.execute(statement)).first()


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
    await _lock_pair(session, source_id, target_id)
    if await _open_merge(session, source_id, target_id) is not None:
        return 0
    now = utcnow()
    source_rows = list((await session.execute(select(c).where(c.c.customer_id == source_id))).all())
    target_rows = list((await session.execute(select(c).where(c.c.customer_id == target_id))).all())
    by_key = {(r.channel, r.topic): r for r in target_rows}
    evidence = f"merge of customers/{source_id} into customers/{target_id} ({why})"
    written: list[dict[str, Any]] = []
    for change in rule.merge(_records(target_rows), _records(source_rows)):
        row = await consents.write(
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
        written.append({"id": row.id, "version": row.version})
    await session.execute(
        k.insert().from_select(
            ["customer_id", "channel", "topic", "contact_time", "request_id"],
            select(literal(target_id), k.c.channel, k.c.topic, k.c.contact_time, k.c.request_id).where(
                k.c.customer_id == source_id
            ),
        )
    )
    adopted = await _adopt_preferences(session, source_id, target_id)
    cs = store.customer_states
    merged_into = f"customers/{target_id}"
    await session.execute(
        insert(cs)
        .values(customer_id=source_id, state=store.MERGED, merged_into=merged_into, update_time=now)
        .on_conflict_do_update(
            index_elements=[cs.c.customer_id],
            set_={"state": store.MERGED, "merged_into": merged_into, "update_time": now},
            where=cs.c.state == store.MERGED,
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
            target_before={_key(r.channel, r.topic): _snapshot(r) for r in target_rows},
            changed={"consents": written, "adopted_preferences": adopted},
            merge_time=now,
        )
    )
    return len(written)


def _key(channel: int, topic: str) -> str:
    return f"{channel}:{topic}"


def _snapshot(row: Any) -> dict[str, Any]:
    expire = row.expire_time.isoformat() if row.expire_time is not None else None
    return {
        "state": row.state,
        "legal_basis": row.legal_basis,
        "expire_time": expire,
        "destination": row.destination,
    }


async def _adopt_preferences(session: AsyncSession, source_id: str, target_id: str) -> bool:
    if (await session.execute(select(p.c.customer_id).where(p.c.customer_id == target_id))).first():
        return False
    result = await session.execute(
        insert(p)
        .from_select(
            [col.name for col in p.c],
            select(*(literal(target_id) if col.name == "customer_id" else col for col in p.c)).where(
                p.c.customer_id == source_id
            ),
        )
        .on_conflict_do_nothing()
    )
    return store.count_rows(result) > 0


async def unmerge_customers(
    session: AsyncSession,
    unit: Unit,
    *,
    source_id: str,
    target_id: str,
    recorded_by: str,
    channel: ChannelInfo,
) -> int | None:
    """Undo the open merge of ``source_id`` into ``target_id``; returns how many of the survivor's
    consents were restored, or None when there is no such merge (nothing to do)."""
    await _lock_pair(session, source_id, target_id)
    merge = await _open_merge(session, source_id, target_id)
    if merge is None:
        return None
    now = utcnow()
    source = consents.Source(
        channel,
        recorded_by,
        f"unmerge of customers/{source_id} from customers/{target_id}: as before the merge",
    )
    restored = 0
    for entry in merge.changed["consents"]:
        current = (await session.execute(select(c).where(c.c.id == entry["id"]))).first()
        if current is None or current.version != entry["version"]:
            continue  # changed since the merge: the survivor's own later decision stands
        before = merge.target_before.get(_key(current.channel, current.topic))
        if before is None:
            await consents.remove(session, unit, current, source, now, cause="unmerge")
        else:
            expire = before.get("expire_time")
            await consents.write(
                session,
                unit,
                customer_id=target_id,
                channel=current.channel,
                topic=current.topic,
                state=before["state"],
                legal_basis=before["legal_basis"],
                source=source,
                now=now,
                current=current,
                cause="unmerge",
                expire_time=datetime.fromisoformat(expire) if expire else None,
                destination=before.get("destination", ""),
            )
            if before["state"] == consents.PENDING:
                await _reopen_token(session, current.id, now)
        restored += 1
    await _drop_copied_contacts(session, source_id, target_id, merge.merge_time)
    if merge.changed.get("adopted_preferences"):
        await session.execute(
            delete(p).where(
                p.c.customer_id == target_id, p.c.version == 1, p.c.update_time <= merge.merge_time
            )
        )
    cs = store.customer_states
    await session.execute(delete(cs).where(cs.c.customer_id == source_id, cs.c.state == store.MERGED))
    await session.execute(update(m).where(m.c.id == merge.id).values(undone=True))
    return restored


async def _drop_copied_contacts(session: AsyncSession, source_id: str, target_id: str, until: Any) -> None:
    own = k.alias("own")
    await session.execute(
        delete(k).where(
            k.c.customer_id == target_id,
            k.c.contact_time <= until,
            select(own.c.seq)
            .where(
                own.c.customer_id == source_id,
                own.c.channel == k.c.channel,
                own.c.topic == k.c.topic,
                own.c.contact_time == k.c.contact_time,
                own.c.request_id == k.c.request_id,
            )
            .exists(),
        )
    )


async def _reopen_token(session: AsyncSession, consent_id: str, now: datetime) -> None:
    """A double opt-in request the merge superseded is pending again: its last token works again."""
    t = store.confirmation_tokens
    last = (
        select(t.c.token_hash)
        .where(
            t.c.consent_id == consent_id, t.c.state == consents.TokenState.SUPERSEDED, t.c.expire_time > now
        )
        .order_by(t.c.create_time.desc())
        .limit(1)
        .scalar_subquery()
    )
    await session.execute(update(t).where(t.c.token_hash == last).values(state=consents.TokenState.OPEN))
