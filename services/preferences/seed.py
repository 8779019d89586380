"""The demo customer's preferences and consents for the local platform (``make run``).

Idempotent: a customer who already has consents is left alone. Written the way the service
writes them (consent rows, their ledger entries and ConsentChangedEvents through the outbox,
relayed once the service runs), as recorded by the demo customer on the web:
- preferences: e-mail, then push, then SMS; quiet hours 22:00–08:00 in Europe/Bucharest;
  language en-GB; at most 3 marketing e-mails a week; preferred store ``locations/store-1``;
- consents: e-mail "offers" GRANTED (the demo address is verified, so no double opt-in),
  e-mail "orders" GRANTED on the basis of the contract, push "*" GRANTED, SMS "offers" DENIED.
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.context import ChannelInfo
from omni_runtime.db.engine import Database
from omni_runtime.events.bus import EventBus
from omni_runtime.events.outbox import Outbox
from omni_runtime.timestamps import utcnow
from services.preferences import consents, store
from services.preferences.config import PreferencesConfig
from services.preferences.domain.quiet import Window
from services.preferences.txn import Unit

H = 3600
DEMO_CONSENTS = (
    (ch.CHANNEL_EMAIL, "offers", res.CONSENT_STATE_GRANTED, res.LEGAL_BASIS_CONSENT),
    (ch.CHANNEL_EMAIL, "orders", res.CONSENT_STATE_GRANTED, res.LEGAL_BASIS_CONTRACT),
    (ch.CHANNEL_PUSH, "*", res.CONSENT_STATE_GRANTED, res.LEGAL_BASIS_CONSENT),
    (ch.CHANNEL_SMS, "offers", res.CONSENT_STATE_DENIED, res.LEGAL_BASIS_CONSENT),
)


async def seed_demo(db: Database, customer: str) -> list[str]:
    """Seed ``customer`` (``customers/{id}``); returns printable lines."""
    customer_id = customer.removeprefix("customers/")
    # The outbox only writes rows in this transaction; the running service relays them.
    unit = Unit(db, Outbox("preferences", db, cast(EventBus, None)), PreferencesConfig())
    c = store.consents
    async with db.transaction() as session:
        await store.lock_customer(session, customer_id)
        if (await session.execute(select(c.c.id).where(c.c.customer_id == customer_id).limit(1))).first():
            return [f"preferences       {customer}: already seeded"]
        now = utcnow()
        source = consents.Source(ChannelInfo(ch.CHANNEL_WEB), customer, "demo data (make run)")
        for channel, topic, state, basis in DEMO_CONSENTS:
            await consents.write(
                session, unit, customer_id=customer_id, channel=channel, topic=topic, state=state,
                legal_basis=basis, source=source, now=now, current=None, cause="seed",
            )  # fmt: skip
        night = Window(22 * H, 8 * H)
        await session.execute(
            insert(store.preferences)
            .values(
                customer_id=customer_id,
                preferred_channels=[ch.CHANNEL_EMAIL, ch.CHANNEL_PUSH, ch.CHANNEL_SMS],
                quiet_hours=[{"start": night.start, "end": night.end, "days": [], "channels": []}],
                time_zone="Europe/Bucharest",
                language_code="en-GB",
                frequency_caps=[
                    {
                        "channel": ch.CHANNEL_EMAIL,
                        "topic": "",
                        "max_count": 3,
                        "seconds": int(timedelta(days=7).total_seconds()),
                    }
                ],
                preferred_store="locations/store-1",
                update_time=now,
            )
            .on_conflict_do_nothing()
        )
    return [
        f"preferences       {customer}: e-mail offers and orders, push: granted; SMS offers: denied;"
        " quiet 22:00-08:00 Europe/Bucharest"
    ]
