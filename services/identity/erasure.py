"""Erasing a customer (GDPR): what identity deletes, blanks and announces.

One path for both ways an erasure starts: identity's own EraseCustomer, and profile's
EraseCustomerData (its CustomerDataErasedEvent with trigger DIRECT_REQUEST, see
``events.ProfileErasures``). Either way identity's CustomerErasedEvent, written in the same
transaction, is identity's receipt and the trigger every other service follows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import resources_pb2
from omni.profile.v1 import events_pb2 as profile_events_pb2
from omni_runtime.events.consumer import Event
from omni_runtime.events.outbox import Outbox
from services.identity import events, store
from services.identity.sessions import Reason, SessionManager

log = logging.getLogger("omni.identity.erasure")
Customer = resources_pb2.Customer


async def erase_customer(
    session: AsyncSession, outbox: Outbox, sessions: SessionManager, row: Any, requested_by: str
) -> None:
    """Erase the (locked) customer row: identifiers and challenges deleted, sessions revoked and
    stripped to what refuses their refresh tokens, the record blanked, CustomerErasedEvent out."""
    name = events.customer_name(row.id)
    await session.execute(store.identifiers.delete().where(store.identifiers.c.customer_id == row.id))
    await session.execute(store.challenges.delete().where(store.challenges.c.customer_id == row.id))
    await sessions.revoke_all(session, name, Reason.REASON_CUSTOMER_ERASED)
    await session.execute(
        update(store.sessions)
        .where(store.sessions.c.principal == name)
        .values(user_agent="", ip_address="", device="")
    )
    await store.bump_customer(
        session,
        row.id,
        state=Customer.STATE_ERASED,
        display_name="",
        password_hash=None,
        origin_device="",
        failed_logins=0,
        locked_until=None,
        lock_reason="",
        erase_time=datetime.now(UTC),
    )
    await outbox.emit(session, events.customer_erased(row.id, requested_by))


class ProfileErasures:
    """Profile's CustomerDataErasedEvent with trigger DIRECT_REQUEST: an operator erased the
    customer at profile (EraseCustomerData), so identity erases the customer, and its
    CustomerErasedEvent carries the erasure to every other service.

    Trigger CUSTOMER_ERASED is profile following identity's own erasure: ignored (no loop). A
    customer identity does not know, or one already erased, still gets a CustomerErasedEvent:
    identity then holds nothing of them (its receipt is due), and the services that may hold
    data under that name erase it (their erasures are idempotent). A MERGED customer is erased
    too: the request names it, and what identity keeps of it (name, sessions) is personal data.
    """

    SUBJECTS = ("omni.profile.customer_data_erased",)

    def __init__(self, outbox: Outbox, sessions: SessionManager) -> None:
        self.outbox = outbox
        self.sessions = sessions

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        erased = event.decode(profile_events_pb2.CustomerDataErasedEvent)
        if erased.trigger != profile_events_pb2.CustomerDataErasedEvent.TRIGGER_DIRECT_REQUEST:
            return
        customer_id = erased.customer.removeprefix("customers/")
        if not customer_id or "/" in customer_id:
            log.warning("ignoring customer_data_erased %s naming %r", event.id, erased.customer)
            return
        row = await store.customer_for_update(session, customer_id)
        if row is None or row.state == Customer.STATE_ERASED:
            log.info("erasure of %s requested at profile: identity holds nothing", erased.customer)
            await self.outbox.emit(session, events.customer_erased(customer_id, erased.requested_by))
            return
        await erase_customer(session, self.outbox, self.sessions, row, erased.requested_by)
