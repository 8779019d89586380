"""The contact-point projection: which channels can reach a customer, at which address, verified
or not — from profile's ProfileUpdatedEvent (the profile's whole list, replaced each time) and
identity's IdentifierLinked/UnlinkedEvent (one identifier each).

Each origin ("profile", or an identifier's resource name) keeps the time of the last event it
applied; an older event arriving late (redelivery, a consumer catching up) is ignored, so an
unlink is never undone by a stale link. A channel has a contact point when any origin gives one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.preferences import store

PROFILE = "profile"


@dataclass(frozen=True, slots=True)
class Point:
    channel: int
    value: str
    verified: bool
    primary: bool


async def _advance(session: AsyncSession, customer_id: str, origin: str, occur_time: datetime) -> bool:
    """Record ``occur_time`` for the origin; False when a newer event was already applied."""
    marks = store.projection_marks
    statement = (
        insert(marks)
        .values(customer_id=customer_id, origin=origin, occur_time=occur_time)
        .on_conflict_do_update(
            index_elements=[marks.c.customer_id, marks.c.origin],
            set_={"occur_time": occur_time},
            where=marks.c.occur_time <= occur_time,
        )
        .returning(marks.c.occur_time)
    )
    return (await session.execute(statement)).first() is not None


async def replace(
    session: AsyncSession, customer_id: str, origin: str, points: Iterable[Point], occur_time: datetime
) -> bool:
    """Make ``points`` the origin's contact points of the customer (if the event is not stale)."""
    if not await _advance(session, customer_id, origin, occur_time):
        return False
    cp = store.contact_points
    await session.execute(delete(cp).where(cp.c.customer_id == customer_id, cp.c.origin == origin))
    rows = {
        (p.channel, p.value): {
            "customer_id": customer_id,
            "origin": origin,
            "channel": p.channel,
            "value": p.value,
            "verified": p.verified,
            "is_primary": p.primary,
        }
        for p in points
        if p.value
    }
    if rows:
        await session.execute(insert(cp).values(list(rows.values())).on_conflict_do_nothing())
    return True


async def profile_language(
    session: AsyncSession, customer_id: str, language: str, occur_time: datetime
) -> None:
    """The profile's language, for DecideContact's language_code when preferences name none."""
    pf = store.profile_facts
    await session.execute(
        insert(pf)
        .values(customer_id=customer_id, language_code=language, occur_time=occur_time)
        .on_conflict_do_update(
            index_elements=[pf.c.customer_id],
            set_={"language_code": language, "occur_time": occur_time},
            where=pf.c.occur_time <= occur_time,
        )
    )


async def of_customer(session: AsyncSession, customer_id: str, channel: int | None = None) -> list[Point]:
    cp = store.contact_points
    statement = select(cp.c.channel, cp.c.value, cp.c.verified, cp.c.is_primary).where(
        cp.c.customer_id == customer_id
    )
    if channel is not None:
        statement = statement.where(cp.c.channel == channel)
    points: dict[tuple[int, str], Point] = {}
    for row in await session.execute(statement):
        key = (row.channel, row.value)
        known = points.get(key)
        points[key] = Point(
            row.channel,
            row.value,
            row.verified or (known is not None and known.verified),
            row.is_primary or (known is not None and known.primary),
        )
    return sorted(points.values(), key=lambda p: (p.channel, not p.primary, not p.verified, p.value))


def destination(points: Iterable[Point], channel: int) -> Point | None:
    """The address a message on ``channel`` goes to: the primary one, else a verified one, else any."""
    for p in points:  # sorted by of_customer: primary first, then verified
        if p.channel == channel:
            return p
    return None


async def erase(session: AsyncSession, customer_id: str) -> int:
    cp, marks = store.contact_points, store.projection_marks
    result = await session.execute(delete(cp).where(cp.c.customer_id == customer_id))
    await session.execute(delete(marks).where(marks.c.customer_id == customer_id))
    await session.execute(delete(store.profile_facts).where(store.profile_facts.c.customer_id == customer_id))
    return store.count_rows(result)
