"""What erasure (GDPR art. 17) does to the preferences service's data about a customer.

Run by the runtime's erasure fan-out (``omni_runtime.events.erasure``) when identity erases the
customer. Deleted: preferences, consents, double opt-in tokens, counted contacts, contact points,
merge records. Kept: the consent ledger, as the legal record of what was consented to and when,
with the customer pseudonymised — the id becomes ``erased-`` + HMAC-SHA256(PSEUDONYM_KEY, id),
also where the customer recorded the entry themselves — so whoever holds the key and the old id
can still prove a disputed consent, and nobody else can tell whose it was. The customer stays
known as ERASED, so late events (a profile update still in flight) cannot bring data back, and
DecideContact answers CUSTOMER_NOT_CONTACTABLE. Idempotent: a second erasure finds nothing left.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from sqlalchemy import case, delete, or_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime import names
from omni_runtime.timestamps import utcnow
from services.preferences import contact_points, store
from services.preferences.txn import Unit


def pseudonym(key: bytes, customer_id: str) -> str:
    return "erased-" + hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]


class Eraser:
    def __init__(self, unit: Unit) -> None:
        self.unit = unit

    async def __call__(self, session: AsyncSession, customer: str) -> Mapping[str, int]:
        ids = names.parse("customers/{customer}", customer)
        if ids is None:
            return {}
        customer_id = ids["customer"]
        await store.lock_customer(session, customer_id)
        counts: dict[str, int] = {}
        for label, table in (
            ("preferences", store.preferences),
            ("consents", store.consents),
            ("confirmation_tokens", store.confirmation_tokens),
            ("contacts", store.contacts),
        ):
            result = await session.execute(delete(table).where(table.c.customer_id == customer_id))
            counts[label] = store.count_rows(result)
        counts["contact_points"] = await contact_points.erase(session, customer_id)
        m = store.merges
        result = await session.execute(
            delete(m).where(or_(m.c.source_customer == customer_id, m.c.target_customer == customer_id))
        )
        counts["merges"] = store.count_rows(result)
        e = store.consent_events
        alias = pseudonym(self.unit.config.pseudonym_key, customer_id)
        own = f"customers/{customer_id}"
        result = await session.execute(
            update(e)
            .where(e.c.customer_id == customer_id)
            .values(
                customer_id=alias,
                recorded_by=case((e.c.recorded_by == own, f"customers/{alias}"), else_=e.c.recorded_by),
            )
        )
        counts["consent_events_pseudonymised"] = store.count_rows(result)
        now = utcnow()
        cs = store.customer_states
        await session.execute(
            insert(cs)
            .values(customer_id=customer_id, state=store.ERASED, update_time=now)
            .on_conflict_do_update(
                index_elements=[cs.c.customer_id],
                set_={"state": store.ERASED, "merged_into": "", "update_time": now},
            )
        )
        return counts
