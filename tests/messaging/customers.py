"""A customer as the platform knows them, for the notification tests: identifiers linked in
identity (published as identity publishes them, so messaging's and preferences' projections both
learn the addresses), preferences and consents set through the real preferences service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import field_mask_pb2

from omni.identity.v1 import events_pb2 as identity_events
from omni.identity.v1 import resources_pb2 as idr
from omni.preferences.v1 import preferences_service_pb2 as pref_svc
from omni.preferences.v1 import preferences_service_pb2_grpc
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.plugin import bearer
from omni_runtime.testing.services import RunningService

KINDS = {"email": idr.IDENTIFIER_KIND_EMAIL, "phone": idr.IDENTIFIER_KIND_PHONE}
SMS, EMAIL, PUSH = ch.CHANNEL_SMS, ch.CHANNEL_EMAIL, ch.CHANNEL_PUSH


@dataclass
class Customer:
    name: str
    email: str
    phone: str
    prefs: Any = field(repr=False, default=None)
    metadata: tuple[tuple[str, str], ...] = ()

    async def preferences(
        self, *channels: int, quiet: tuple[int, int] | None = None, time_zone: str = "Europe/Bucharest"
    ) -> None:
        from google.type import timeofday_pb2

        prefs = pref.Preferences(
            name=f"{self.name}/preferences", preferred_channels=list(channels), time_zone=time_zone
        )
        paths = ["preferred_channels", "time_zone"]
        if quiet is not None:
            prefs.quiet_hours.append(
                pref.QuietHours(
                    start_time=timeofday_pb2.TimeOfDay(hours=quiet[0]),
                    end_time=timeofday_pb2.TimeOfDay(hours=quiet[1]),
                )
            )
            paths.append("quiet_hours")
        await self.prefs.UpdatePreferences(
            pref_svc.UpdatePreferencesRequest(
                preferences=prefs, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
            metadata=self.metadata,
        )

    async def consent(self, channel: int, topic: str, state: int = pref.CONSENT_STATE_GRANTED) -> None:
        await self.prefs.SetConsent(
            pref_svc.SetConsentRequest(
                parent=self.name, channel=channel, topic=topic, state=state, request_id=str(uuid.uuid4())
            ),  # type: ignore[arg-type]
            metadata=self.metadata,
        )


async def link(nats_url: str, customer: str, kind: str, value: str) -> None:
    await publish_event(
        nats_url,
        identity_events.IdentifierLinkedEvent(
            identifier=f"{customer}/identifiers/{uuid.uuid4().hex[:8]}",
            customer=customer,
            kind=KINDS[kind],
            value=value,
            verified=True,
            primary=True,
        ),
    )


async def new_customer(
    nats_url: str, preferences: RunningService, token: str, *, phone: str | None = None
) -> Customer:
    name = f"customers/{uuid.uuid4().hex[:12]}"
    email = f"{name.split('/')[1]}@example.com"
    number = phone if phone is not None else "+4072" + f"{uuid.uuid4().int % 10**7:07d}"
    await link(nats_url, name, "email", email)
    await link(nats_url, name, "phone", number)
    stub = preferences_service_pb2_grpc.PreferencesServiceStub(preferences.channel)
    return Customer(name, email, number, stub, (*bearer(token), ("x-omni-channel", "web")))


async def known_by_both(db: Any, customer: Customer) -> bool:
    """Whether messaging's projection and preferences both know the customer's addresses."""
    from sqlalchemy import text

    async with db.transaction() as session:
        rows = await session.execute(
            text("SELECT count(*) FROM contact_points WHERE customer = :c"), {"c": customer.name}
        )
        if rows.scalar_one() < 2:
            return False
    decision = await customer.prefs.DecideContact(
        pref_svc.DecideContactRequest(
            name=f"{customer.name}/preferences",
            topic="order_updates",
            purpose=pref.CONTACT_PURPOSE_TRANSACTIONAL,
            channel=SMS,
        ),
        metadata=customer.metadata,
    )
    return pref.DECISION_REASON_NO_CONTACT_POINT not in decision.reasons
