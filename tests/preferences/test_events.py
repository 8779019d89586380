"""What the service follows from identity and profile, through real JetStream consumers:
consent-safe merges (both orders, both producers) and unmerges, the contact-point projection,
and erasure with its receipt."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import text

from omni.identity.v1 import events_pb2 as identity_events
from omni.identity.v1 import resources_pb2 as identity_res
from omni.preferences.v1 import events_pb2 as ev
from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import resources_pb2 as res
from omni.profile.v1 import events_pb2 as profile_events
from omni.profile.v1 import resources_pb2 as profile_res
from omni.type.v1 import channel_pb2 as ch
from omni.type.v1 import erasure_pb2
from omni_runtime.db.engine import Database
from omni_runtime.testing.calls import Caller, EventTap, eventually, reason, rpc_error
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.plugin import Infra
from services.preferences.erasure import pseudonym
from tests.preferences.conftest import has_contact_point, new_customer, set_consent, with_email

GRANTED, DENIED, WITHDRAWN = res.CONSENT_STATE_GRANTED, res.CONSENT_STATE_DENIED, res.CONSENT_STATE_WITHDRAWN
R = res.DecisionReason


async def states(api: Caller, customer: str) -> dict[tuple[int, str], int]:
    listed = await api.ListConsents(svc.ListConsentsRequest(parent=customer, page_size=200))
    return {(c.channel, c.topic): c.state for c in listed.consents}


async def guest_merged(infra: Infra, guest: str, customer: str) -> None:
    await publish_event(
        infra.nats_url,
        identity_events.GuestUpgradedEvent(
            guest=guest,
            customer=customer,
            outcome=identity_events.GuestUpgradedEvent.OUTCOME_MERGED,
            channel=ch.ChannelContext(channel=ch.CHANNEL_MOBILE_APP),
        ),
    )


async def profiles_merged(infra: Infra, source: str, target: str) -> None:
    await publish_event(
        infra.nats_url,
        profile_events.ProfilesMergedEvent(
            source_customer=source,
            target_customer=target,
            source_profile=f"{source}/profile",
            target_profile=f"{target}/profile",
            reason=profile_res.MERGE_REASON_DUPLICATE,
            merged_by="staffMembers/a1",
        ),
    )


async def merged_away(db: Database, customer: str) -> bool:
    async with db.transaction() as session:
        state = (
            await session.execute(
                text("SELECT state FROM customer_states WHERE customer_id = :c"),
                {"c": customer.removeprefix("customers/")},
            )
        ).scalar()
    return state == 1


EMAIL, SMS, PUSH = ch.CHANNEL_EMAIL, ch.CHANNEL_SMS, ch.CHANNEL_PUSH
SIDE_A = [(PUSH, "*", WITHDRAWN), (PUSH, "news", GRANTED), (SMS, "offers", GRANTED)]
SIDE_B = [(PUSH, "offers", GRANTED), (SMS, "offers", DENIED), (PUSH, "news", GRANTED)]
# Push: A withdrew every topic but news (both granted news), so B's offers grant gives way; SMS: B refused.
EXPECTED = {
    (PUSH, "*"): WITHDRAWN,
    (PUSH, "news"): GRANTED,
    (PUSH, "offers"): WITHDRAWN,
    (SMS, "offers"): DENIED,
}


async def seed(api: Caller, customer: str, side: list[tuple[int, str, int]]) -> None:
    for channel, topic, state in side:
        if state == WITHDRAWN:
            await api.SetConsent(set_consent(customer, channel, topic, GRANTED))
        await api.SetConsent(set_consent(customer, channel, topic, state, evidence="seed"))


async def test_guest_merge_is_consent_safe_in_both_orders(
    backend: Caller, omni_infra: Infra, db: Database
) -> None:
    pairs = []
    for survivor_side, guest_side in ((SIDE_A, SIDE_B), (SIDE_B, SIDE_A)):
        guest, customer = new_customer(), new_customer()
        await seed(backend, guest, guest_side)
        await seed(backend, customer, survivor_side)
        await guest_merged(omni_infra, guest, customer)
        pairs.append((guest, customer))
    for guest, customer in pairs:

        async def merged(guest: str = guest) -> bool:
            return await merged_away(db, guest)

        await eventually(merged, 15)
        got = await states(backend, customer)
        for key, state in EXPECTED.items():
            effective = got.get(key, got.get((key[0], "*")))
            assert effective == state, (key, got)
        merge_entries = await backend.ListConsentEvents(
            svc.ListConsentEventsRequest(
                parent=f"{customer}/consents/-", filter='source.recorded_by = "' + customer + '"'
            )
        )
        assert any("merge of " + guest in e.source.evidence for e in merge_entries.consent_events)
        # The absorbed guest can no longer be contacted or be given consents.
        decision = await backend.DecideContact(
            svc.DecideContactRequest(name=f"{guest}/preferences", topic="offers")
        )
        assert list(decision.reasons) == [R.DECISION_REASON_CUSTOMER_NOT_CONTACTABLE]
        error = await rpc_error(backend.SetConsent(set_consent(guest, PUSH, "offers", GRANTED)))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and reason(error) == "CUSTOMER_MERGED"


async def test_profile_merge_then_unmerge_restores_both_sides(
    backend: Caller, omni_infra: Infra, db: Database
) -> None:
    source, target = new_customer(), new_customer()
    await seed(backend, source, [(EMAIL, "offers", DENIED), (PUSH, "tips", GRANTED)])
    await with_email(omni_infra, db, target)
    await seed(backend, target, [(EMAIL, "offers", GRANTED), (ch.CHANNEL_WEB, "offers", GRANTED)])
    await profiles_merged(omni_infra, source, target)
    # The same merge arriving again (identity's guest merge, then profile's) changes nothing.
    await profiles_merged(omni_infra, source, target)

    async def merged() -> bool:
        return await merged_away(db, source)

    await eventually(merged, 15)
    assert await states(backend, target) == {
        (EMAIL, "offers"): DENIED,
        (PUSH, "tips"): GRANTED,
        (ch.CHANNEL_WEB, "offers"): GRANTED,
    }
    # After the merge the survivor decides something new itself; the unmerge keeps it.
    await backend.SetConsent(set_consent(target, ch.CHANNEL_WEB, "offers", WITHDRAWN))
    await publish_event(
        omni_infra.nats_url,
        profile_events.ProfilesUnmergedEvent(
            source_customer=source, target_customer=target, unmerged_by="staffMembers/a1"
        ),
    )

    async def unmerged() -> bool:
        return not await merged_away(db, source)

    await eventually(unmerged, 15)
    assert await states(backend, target) == {
        (EMAIL, "offers"): GRANTED,
        (ch.CHANNEL_WEB, "offers"): WITHDRAWN,
    }
    assert await states(backend, source) == {(EMAIL, "offers"): DENIED, (PUSH, "tips"): GRANTED}
    assert (
        await backend.DecideContact(
            svc.DecideContactRequest(name=f"{source}/preferences", topic="tips", channel=PUSH)
        )
    ).reasons == [R.DECISION_REASON_NO_CONTACT_POINT]


async def test_contact_points_follow_profile_and_identity(
    backend: Caller, omni_infra: Infra, db: Database
) -> None:
    customer = new_customer()
    await backend.SetConsent(set_consent(customer, PUSH, "offers", GRANTED))
    await backend.SetConsent(
        set_consent(customer, SMS, "*", GRANTED, basis=res.LEGAL_BASIS_LEGITIMATE_INTEREST)
    )

    def profile(*points: profile_res.ContactPoint, seconds: int) -> profile_events.ProfileUpdatedEvent:
        return profile_events.ProfileUpdatedEvent(
            customer=customer,
            profile=f"{customer}/profile",
            changed_fields=["contact_points"],
            snapshot=profile_res.Profile(
                name=f"{customer}/profile", contact_points=points, language_code="de-AT"
            ),
            occur_time=timestamp_pb2.Timestamp(seconds=seconds),
        )

    push = profile_res.ContactPoint(
        kind=profile_res.ContactPoint.KIND_PUSH_TOKEN, value="tok-1", primary=True
    )
    await publish_event(omni_infra.nats_url, profile(push, seconds=2_000_000_000))

    async def push_known() -> bool:
        return await has_contact_point(db, customer, PUSH)

    await eventually(push_known, 15)
    decide = svc.DecideContactRequest(name=f"{customer}/preferences", topic="offers", channel=PUSH)
    allowed = await backend.DecideContact(decide)
    assert allowed.allowed and allowed.language_code == "de-AT", "the profile's language, none in preferences"
    # An older snapshot arriving late does not undo the newer one; a newer empty one does.
    await publish_event(omni_infra.nats_url, profile(seconds=1_000_000_000))
    await publish_event(omni_infra.nats_url, profile(seconds=2_000_000_100))

    async def push_gone() -> bool:
        return not await has_contact_point(db, customer, PUSH)

    await eventually(push_gone, 15)
    assert list((await backend.DecideContact(decide)).reasons) == [R.DECISION_REASON_NO_CONTACT_POINT]

    identifier = f"{customer}/identifiers/{uuid.uuid4().hex[:8]}"
    linked = identity_events.IdentifierLinkedEvent(
        identifier=identifier,
        customer=customer,
        kind=identity_res.IDENTIFIER_KIND_PHONE,
        value="+40700000001",
        verified=True,
        occur_time=timestamp_pb2.Timestamp(seconds=2_000_000_000),
    )
    await publish_event(omni_infra.nats_url, linked)

    async def phone_known() -> bool:
        return await has_contact_point(db, customer, SMS, verified=True)

    await eventually(phone_known, 15)
    sms = svc.DecideContactRequest(name=f"{customer}/preferences", topic="offers", channel=SMS)
    assert (await backend.DecideContact(sms)).allowed
    await publish_event(
        omni_infra.nats_url,
        identity_events.IdentifierUnlinkedEvent(
            identifier=identifier, customer=customer, kind=identity_res.IDENTIFIER_KIND_PHONE,
            value="+40700000001", occur_time=timestamp_pb2.Timestamp(seconds=2_000_000_050),
        ),
    )  # fmt: skip

    async def phone_gone() -> bool:
        return not await has_contact_point(db, customer, SMS)

    await eventually(phone_gone, 15)
    await publish_event(omni_infra.nats_url, linked)  # a stale redelivery with a new id
    await publish_event(omni_infra.nats_url, profile(seconds=2_000_000_200))
    await eventually(push_gone, 5)
    assert not await has_contact_point(db, customer, SMS)


async def test_erasure_deletes_pseudonymises_the_ledger_and_reports(
    as_role: Callable[..., Caller], backend: Caller, omni_infra: Infra, db: Database, events: EventTap
) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    await with_email(omni_infra, db, customer)
    granted = await me.SetConsent(set_consent(customer, EMAIL, "offers", GRANTED))
    await backend.SetConsent(set_consent(customer, EMAIL, "offers", WITHDRAWN))
    await me.SetConsent(set_consent(customer, SMS, "offers", GRANTED))  # pending: no phone
    await backend.UpdatePreferences(
        svc.UpdatePreferencesRequest(
            preferences=res.Preferences(name=f"{customer}/preferences", language_code="ro")
        )
    )
    erased = identity_events.CustomerErasedEvent(customer=customer, requested_by=customer)
    event_id = await publish_event(omni_infra.nats_url, erased)
    receipt = await events.wait_for(
        ev.CustomerErasureProcessedEvent, lambda m: m.receipt.customer == customer, 15
    )
    assert receipt.receipt.state == erasure_pb2.ErasureReceipt.STATE_DONE
    assert receipt.receipt.service == "preferences"
    counts = dict(receipt.receipt.erased_counts)
    assert (
        counts["consents"] == 2 and counts["preferences"] == 1 and counts["consent_events_pseudonymised"] == 3
    )
    assert counts["contact_points"] >= 1 and counts["confirmation_tokens"] == 1

    assert await states(backend, customer) == {}
    prefs = await backend.GetPreferences(svc.GetPreferencesRequest(name=f"{customer}/preferences"))
    assert prefs.etag == 'W/"0"'
    decision = await backend.DecideContact(
        svc.DecideContactRequest(
            name=f"{customer}/preferences", topic="orders", purpose=res.CONTACT_PURPOSE_TRANSACTIONAL
        )
    )
    assert list(decision.reasons) == [R.DECISION_REASON_CUSTOMER_NOT_CONTACTABLE]
    # The ledger stays, about a pseudonym; the customer's own entries name the pseudonym too.
    alias = pseudonym(b"omni-local-development-only", customer.removeprefix("customers/"))
    kept = await backend.ListConsentEvents(
        svc.ListConsentEventsRequest(parent=f"customers/{alias}/consents/-")
    )
    assert len(kept.consent_events) == 3
    assert {e.source.recorded_by for e in kept.consent_events} == {
        f"customers/{alias}",
        "serviceClients/web-backend",
    }
    assert kept.consent_events[-1].name.startswith(
        f"customers/{alias}/consents/{granted.name.rsplit('/', 1)[1]}/"
    )
    assert not (
        await backend.ListConsentEvents(svc.ListConsentEventsRequest(parent=f"{customer}/consents/-"))
    ).consent_events

    # A redelivered erasure is skipped; a repeated one (a new event) finds nothing and reports so.
    await publish_event(omni_infra.nats_url, erased, event_id=event_id)
    await publish_event(omni_infra.nats_url, erased)

    async def second_receipt() -> bool:
        return (
            len([m for m in events.of(ev.CustomerErasureProcessedEvent) if m.receipt.customer == customer])
            >= 2
        )

    await eventually(second_receipt, 15)
    again = [m for m in events.of(ev.CustomerErasureProcessedEvent) if m.receipt.customer == customer]
    assert len(again) == 2 and again[1].receipt.erased_counts["consents"] == 0
    # Nothing comes back after the erasure.
    error = await rpc_error(backend.SetConsent(set_consent(customer, EMAIL, "offers", GRANTED)))
    assert reason(error) == "CUSTOMER_ERASED"
