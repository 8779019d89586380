"""Preferences' demo data for the local platform (``omni_runtime.demo`` runs ``DEMO``): the demo
customer's contact preferences and consents, recorded through PreferencesService as the demo
admin (so the ledger, events and double opt-in rules apply as for real data):

- preferences: e-mail, then push, then SMS; quiet hours 22:00–08:00 in Europe/Bucharest;
  language en-GB; at most 3 marketing e-mails a week; preferred store ``locations/store-1``;
- consents: e-mail "offers" GRANTED (the demo address is verified, so no double opt-in),
  e-mail "orders" GRANTED on the basis of the contract, push "*" GRANTED, SMS "offers" DENIED.

The verified address reaches preferences as identity's IdentifierLinkedEvent; the load waits
(up to 30 s) until the projection has it, so the e-mail consent is granted, not left pending.
Fixed request ids make an interrupted load finish without a second ledger entry per step.
"""

from __future__ import annotations

import asyncio

from google.protobuf import duration_pb2, field_mask_pb2
from google.type import timeofday_pb2

from omni.preferences.v1 import preferences_service_pb2 as pb
from omni.preferences.v1 import preferences_service_pb2_grpc
from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.demo import DemoContext, DemoResult, DemoSeed

EVIDENCE = "demo data (make run): web preference centre v1"
CONSENTS = (
    (ch.CHANNEL_EMAIL, "offers", res.CONSENT_STATE_GRANTED, res.LEGAL_BASIS_CONSENT),
    (ch.CHANNEL_EMAIL, "orders", res.CONSENT_STATE_GRANTED, res.LEGAL_BASIS_CONTRACT),
    (ch.CHANNEL_PUSH, "*", res.CONSENT_STATE_GRANTED, res.LEGAL_BASIS_CONSENT),
    (ch.CHANNEL_SMS, "offers", res.CONSENT_STATE_DENIED, res.LEGAL_BASIS_CONSENT),
)
ADDRESS_WAIT_S = 30.0


def _stub(demo: DemoContext) -> preferences_service_pb2_grpc.PreferencesServiceStub:
    return preferences_service_pb2_grpc.PreferencesServiceStub(demo.channel("preferences"))


def _customer(demo: DemoContext) -> str:
    return str(demo.facts["identity"]["customer"])


async def is_empty(demo: DemoContext) -> bool:
    listed = await _stub(demo).ListConsents(pb.ListConsentsRequest(parent=_customer(demo), page_size=1))
    return not listed.consents


async def _email_known(demo: DemoContext) -> bool:
    decision = await _stub(demo).DecideContact(
        pb.DecideContactRequest(
            name=f"{_customer(demo)}/preferences",
            topic="orders",
            purpose=res.CONTACT_PURPOSE_URGENT,
            channel=ch.CHANNEL_EMAIL,
        )
    )
    return res.DECISION_REASON_NO_CONTACT_POINT not in decision.reasons


async def load(demo: DemoContext) -> DemoResult:
    stub, customer = _stub(demo), _customer(demo)
    async with asyncio.timeout(ADDRESS_WAIT_S):
        while not await _email_known(demo):  # noqa: ASYNC110 (another service's event, no signal)
            await asyncio.sleep(0.2)
    await stub.UpdatePreferences(
        pb.UpdatePreferencesRequest(
            preferences=res.Preferences(
                name=f"{customer}/preferences",
                preferred_channels=[ch.CHANNEL_EMAIL, ch.CHANNEL_PUSH, ch.CHANNEL_SMS],
                quiet_hours=[
                    res.QuietHours(
                        start_time=timeofday_pb2.TimeOfDay(hours=22),
                        end_time=timeofday_pb2.TimeOfDay(hours=8),
                    )
                ],
                time_zone="Europe/Bucharest",
                language_code="en-GB",
                frequency_caps=[
                    res.FrequencyCap(
                        channel=ch.CHANNEL_EMAIL, max_count=3, period=duration_pb2.Duration(seconds=7 * 86400)
                    )
                ],
                preferred_store="locations/store-1",
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["*"]),
            request_id=demo.request_id("preferences"),
        )
    )
    states = {}
    for channel, topic, state, basis in CONSENTS:
        consent = await stub.SetConsent(
            pb.SetConsentRequest(
                parent=customer,
                channel=channel,
                topic=topic,
                state=state,
                legal_basis=basis,
                source=res.ConsentSource(
                    channel=ch.ChannelContext(channel=ch.CHANNEL_WEB), evidence=EVIDENCE
                ),
                request_id=demo.request_id(f"consent:{channel}:{topic}"),
            )
        )
        states[f"{ch.Channel.Name(channel)}:{topic}"] = res.ConsentState.Name(consent.state)
    return DemoResult(
        lines=[
            f"preferences       {customer}: e-mail offers and orders and push granted, SMS offers denied;"
            " quiet 22:00-08:00 Europe/Bucharest"
        ],
        facts={"customer": customer, "consents": states},
    )


DEMO = DemoSeed(is_empty=is_empty, load=load)
