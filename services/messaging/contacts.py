"""Where to reach a customer: a projection of their addresses, kept from other services' events,
with identity as the fallback.

- identity's IdentifierLinkedEvent / IdentifierUnlinkedEvent: e-mail, phone, WhatsApp, Facebook
  and Instagram identifiers (source ``identity``);
- profile's ProfileUpdatedEvent: the profile's contact points, push tokens included, replacing
  what the profile said before (source ``profile``).
When the projection has nothing for a channel (the notification overtook the event), identity's
ListIdentifiers is read. Erasure deletes the customer's rows.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import events_pb2 as identity_events
from omni.profile.v1 import events_pb2 as profile_events
from omni.profile.v1 import resources_pb2 as profile_res
from omni_runtime.events.consumer import Event
from omni_runtime.timestamps import utcnow
from services.messaging import store
from services.messaging.adapters.identity import KINDS as IDENTITY_KINDS
from services.messaging.domain.contacts import (
    EMAIL,
    FACEBOOK,
    INAPP,
    INSTAGRAM,
    PHONE,
    PUSH_TOKEN,
    WHATSAPP,
    ContactPoint,
    Destination,
    choose,
    needs_address,
)
from services.messaging.unit import Unit

C = store.contact_points
IDENTIFIER_LINKED = "omni.identity.identifier_linked"
IDENTIFIER_UNLINKED = "omni.identity.identifier_unlinked"
PROFILE_UPDATED = "omni.profile.profile_updated"
PROFILE_KINDS = {
    profile_res.ContactPoint.KIND_EMAIL: EMAIL,
    profile_res.ContactPoint.KIND_PHONE: PHONE,
    profile_res.ContactPoint.KIND_PUSH_TOKEN: PUSH_TOKEN,
    profile_res.ContactPoint.KIND_FACEBOOK: FACEBOOK,
    profile_res.ContactPoint.KIND_WHATSAPP: WHATSAPP,
    profile_res.ContactPoint.KIND_INSTAGRAM: INSTAGRAM,
}


async def on_identifier_linked(session: AsyncSession, event: Event) -> None:
    linked = event.decode(identity_events.IdentifierLinkedEvent)
    kind = IDENTITY_KINDS.get(linked.kind)
    if kind is None or not linked.customer or not linked.value:
        return
    now = utcnow()
    await session.execute(
        insert(C)
        .values(
            customer=linked.customer,
            source="identity",
            kind=kind,
            value=linked.value,
            is_primary=linked.primary,
            verified=linked.verified,
            update_time=now,
        )
        .on_conflict_do_update(
            index_elements=[C.c.customer, C.c.source, C.c.kind, C.c.value],
            set_={"is_primary": linked.primary, "verified": linked.verified, "update_time": now},
        )
    )


async def on_identifier_unlinked(session: AsyncSession, event: Event) -> None:
    unlinked = event.decode(identity_events.IdentifierUnlinkedEvent)
    kind = IDENTITY_KINDS.get(unlinked.kind)
    if kind is None:
        return
    await session.execute(
        delete(C).where(
            C.c.customer == unlinked.customer,
            C.c.source == "identity",
            C.c.kind == kind,
            C.c.value == unlinked.value,
        )
    )


async def on_profile_updated(session: AsyncSession, event: Event) -> None:
    """The profile's contact points replace what the profile said before."""
    updated = event.decode(profile_events.ProfileUpdatedEvent)
    if not updated.customer or (updated.changed_fields and "contact_points" not in updated.changed_fields):
        return
    await session.execute(delete(C).where(C.c.customer == updated.customer, C.c.source == "profile"))
    now = utcnow()
    rows = {
        (PROFILE_KINDS[p.kind], p.value): p
        for p in updated.snapshot.contact_points
        if p.kind in PROFILE_KINDS and p.value
    }
    if rows:
        await session.execute(
            insert(C).values(
                [
                    {
                        "customer": updated.customer,
                        "source": "profile",
                        "kind": kind,
                        "value": value,
                        "is_primary": p.primary,
                        "verified": p.verified,
                        "update_time": now,
                    }
                    for (kind, value), p in rows.items()
                ]
            )
        )


async def points(session: AsyncSession, customer: str) -> list[ContactPoint]:
    rows = (await session.execute(select(C).where(C.c.customer == customer))).all()
    return [ContactPoint(r.kind, r.value, r.is_primary, r.verified, r.update_time) for r in rows]


async def points_of(session: AsyncSession, customers: Iterable[str]) -> dict[str, list[ContactPoint]]:
    """The projection's points of several customers at once (a worker's batch)."""
    found: dict[str, list[ContactPoint]] = {}
    rows = await session.execute(select(C).where(C.c.customer.in_(set(customers))))
    for r in rows:
        found.setdefault(r.customer, []).append(
            ContactPoint(r.kind, r.value, r.is_primary, r.verified, r.update_time)
        )
    return found


async def resolve(
    unit: Unit, customer: str, channel: int, known: list[ContactPoint] | None = None
) -> Destination | None:
    """The destination for ``channel``: the projection's best point (``known``: read already),
    else identity's."""
    if not needs_address(channel):
        return Destination(INAPP, customer)
    if known is None:
        async with unit.db.transaction() as session:
            known = await points(session, customer)
    found = choose(known, channel)
    if found is None and customer:
        fallback = await unit.identity.contact_points(customer)
        found = choose(fallback or (), channel)
    return Destination(found.kind, found.value) if found is not None else None


async def erase(session: AsyncSession, customer: str) -> int:
    result = await session.execute(delete(C).where(and_(C.c.customer == customer)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
