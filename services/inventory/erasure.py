"""What the inventory service does when identity erases a customer (GDPR art. 17).

Back-in-stock subscriptions exist only to contact the person: they are deleted. Reservations stay
(they hold or held stock, and the ledger's movements refer to them), with the one personal fact
they can carry removed: the reference point of a NEAREST reservation, which is often the
customer's position or home. The stock ledger names reservations and channels, never a person,
and stays append-only. Registered through ``omni_runtime.events.erasure.consume_erasures``
(main.py), which writes the receipt in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.inventory import store


async def erase_customer(session: AsyncSession, customer: str) -> Mapping[str, int]:
    subs = store.stock_subscriptions
    removed = await session.execute(delete(subs).where(subs.c.customer == customer))
    reservations = store.reservations
    owned = or_(
        reservations.c.owner == customer, reservations.c.owner.startswith(f"{customer}/", autoescape=True)
    )
    cleared = await session.execute(
        update(reservations)
        .where(owned, reservations.c.near_latitude.is_not(None))
        .values(near_latitude=None, near_longitude=None)
    )
    return {"stock_subscriptions": removed.rowcount, "reservation_positions": cleared.rowcount}
