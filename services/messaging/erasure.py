"""Erasure of a customer (identity's CustomerErasedEvent, through the runtime's
``consume_erasures``): waiting notifications are suppressed (CUSTOMER_ERASED), every notification
keeps its facts (template, channel, state, times: the business's record that a message was sent)
but loses what is personal (params, rendered subject and body, addresses, provider error texts),
and the customer's contact points are deleted. Idempotent: a second erasure finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.messaging.v1 import resources_pb2 as res
from services.messaging import contacts, notifications, store
from services.messaging.unit import Unit

N = store.notifications
A = store.delivery_attempts


def eraser(unit: Unit) -> Callable[[AsyncSession, str], Any]:
    async def erase(session: AsyncSession, customer: str) -> Mapping[str, int]:
        suppressed = await notifications.suppress_pending(
            unit, session, N.c.customer == customer, res.SUPPRESSION_REASON_CUSTOMER_ERASED
        )
        ids = select(N.c.id).where(N.c.customer == customer).scalar_subquery()
        attempts = await session.execute(
            update(A)
            .where(A.c.notification_id.in_(ids), A.c.destination != "")
            .values(destination="", error_message="")
        )
        wiped = await session.execute(
            update(N)
            .where(N.c.customer == customer, N.c.erased.is_(False))
            .values(params={}, rendered_subject="", rendered_body="", fixed_value="", erased=True)
        )
        points = await contacts.erase(session, customer)
        return {
            "notifications_suppressed": suppressed,
            "notifications_wiped": int(wiped.rowcount or 0),  # type: ignore[attr-defined]
            "delivery_attempts_wiped": int(attempts.rowcount or 0),  # type: ignore[attr-defined]
            "contact_points": points,
        }

    return erase
