"""Consents, their append-only ledger and double opt-in, against the real service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from sqlalchemy import text

from omni.preferences.v1 import events_pb2 as ev
from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.db.engine import Database
from omni_runtime.testing.calls import Caller, EventTap, details, eventually, reason, rpc_error
from omni_runtime.testing.plugin import Infra
from tests.preferences.conftest import new_customer, set_consent, with_email, with_phone

GRANTED, DENIED, WITHDRAWN = res.CONSENT_STATE_GRANTED, res.CONSENT_STATE_DENIED, res.CONSENT_STATE_WITHDRAWN
PENDING = res.CONSENT_STATE_PENDING_CONFIRMATION


async def history(api: Caller, parent: str, **kw: object) -> list[res.ConsentEvent]:
    response = await api.ListConsentEvents(svc.ListConsentEventsRequest(parent=parent, **kw))
    return list(response.consent_events)


async def test_set_consent_records_who_where_and_why_and_every_change_in_the_ledger(
    as_role: Callable[..., Caller], events: EventTap
) -> None:
    customer = new_customer()
    me = as_role(customer, "customer", channel="mobile_app")
    consent = await me.SetConsent(
        set_consent(customer, ch.CHANNEL_PUSH, "offers", GRANTED, evidence="app settings v3: 'Offers' toggle")
    )
    assert consent.state == GRANTED and consent.legal_basis == res.LEGAL_BASIS_CONSENT
    assert consent.source.recorded_by == customer
    assert consent.source.channel.channel == ch.CHANNEL_MOBILE_APP
    assert consent.source.evidence == "app settings v3: 'Offers' toggle"
    assert consent.name.startswith(f"{customer}/consents/") and consent.etag

    # A re-confirmation changes nothing but is an entry of its own; the change after it too.
    again = await me.SetConsent(set_consent(customer, ch.CHANNEL_PUSH, "offers", GRANTED))
    assert again.name == consent.name
    agent = as_role("staffMembers/a1", "agent", channel="call_center")
    withdrawn = await agent.SetConsent(
        set_consent(customer, ch.CHANNEL_PUSH, "offers", WITHDRAWN, evidence="call 8812")
    )
    assert withdrawn.state == WITHDRAWN and withdrawn.source.recorded_by == "staffMembers/a1"
    assert withdrawn.source.channel.channel == ch.CHANNEL_CALL_CENTER

    entries = await history(me, consent.name)
    assert [(e.state, e.previous_state) for e in entries] == [
        (WITHDRAWN, GRANTED),
        (GRANTED, GRANTED),
        (GRANTED, res.CONSENT_STATE_UNSPECIFIED),
    ]
    oldest_first = await history(me, consent.name, order_by="create_time")
    assert [e.name for e in oldest_first] == [e.name for e in reversed(entries)]
    by_agent = await history(me, f"{customer}/consents/-", filter='source.recorded_by = "staffMembers/a1"')
    assert [e.state for e in by_agent] == [WITHDRAWN]

    # Only the two real changes are announced.
    await events.wait_for(
        ev.ConsentChangedEvent, lambda m: m.consent == consent.name and m.state == WITHDRAWN
    )
    changes = [m for m in events.of(ev.ConsentChangedEvent) if m.consent == consent.name]
    assert [(m.state, m.previous_state) for m in changes] == [
        (GRANTED, res.CONSENT_STATE_UNSPECIFIED),
        (WITHDRAWN, GRANTED),
    ]
    assert changes[1].source.recorded_by == "staffMembers/a1"


async def test_request_ids_etags_and_preconditions(as_role: Callable[..., Caller]) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    request = set_consent(customer, ch.CHANNEL_PUSH, "news", DENIED)
    first = await me.SetConsent(request)
    retry = await me.SetConsent(request)
    assert retry == first
    assert len(await history(me, first.name)) == 1, "a retry appends no second entry"

    stale = set_consent(customer, ch.CHANNEL_PUSH, "news", GRANTED, etag='W/"999"')
    error = await rpc_error(me.SetConsent(stale), grpc.StatusCode.ABORTED)
    assert details(error)["ErrorInfo"].metadata["current_etag"] == first.etag
    fresh = await me.SetConsent(set_consent(customer, ch.CHANNEL_PUSH, "news", GRANTED, etag=first.etag))
    assert fresh.state == GRANTED and fresh.etag != first.etag

    # WITHDRAWN only follows GRANTED.
    never = set_consent(customer, ch.CHANNEL_PUSH, "tips", WITHDRAWN)
    error = await rpc_error(me.SetConsent(never), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(error) == "CONSENT_NOT_GRANTED"

    got = await me.GetConsent(svc.GetConsentRequest(name=fresh.name))
    assert got == fresh
    listed = await me.ListConsents(
        svc.ListConsentsRequest(parent=customer, filter="state = CONSENT_STATE_GRANTED")
    )
    assert [c.name for c in listed.consents] == [fresh.name]
    missing = f"{customer}/consents/nope"
    await rpc_error(me.GetConsent(svc.GetConsentRequest(name=missing)), grpc.StatusCode.NOT_FOUND)


async def test_concurrent_set_consent_keeps_one_consent_and_every_entry(
    as_role: Callable[..., Caller],
) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    states = [GRANTED if i % 2 else DENIED for i in range(12)]
    results = await asyncio.gather(
        *(me.SetConsent(set_consent(customer, ch.CHANNEL_WEB, "offers", s)) for s in states)
    )
    assert len({r.name for r in results}) == 1
    assert len(await history(me, results[0].name, page_size=100)) == 12


async def test_the_ledger_refuses_update_and_delete_at_the_sql_level(
    as_role: Callable[..., Caller], db: Database
) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    await me.SetConsent(set_consent(customer, ch.CHANNEL_PUSH, "offers", GRANTED))
    cid = customer.removeprefix("customers/")
    for statement in (
        "UPDATE consent_events SET state = 2 WHERE customer_id = :c",
        "UPDATE consent_events SET evidence = 'rewritten' WHERE customer_id = :c",
        # Pseudonymising while changing anything else is refused too.
        "UPDATE consent_events SET customer_id = 'erased-x', state = 2 WHERE customer_id = :c",
        "DELETE FROM consent_events WHERE customer_id = :c",
        "TRUNCATE consent_events",
    ):
        try:
            async with db.transaction() as session:
                await session.execute(text(statement), {"c": cid})
        except Exception as exc:
            assert "append-only" in str(exc), statement
        else:
            raise AssertionError(f"the ledger accepted: {statement}")
    async with db.transaction() as session:
        count = (
            await session.execute(
                text("SELECT count(*) FROM consent_events WHERE customer_id = :c"), {"c": cid}
            )
        ).scalar()
    assert count == 1


# --- double opt-in ----------------------------------------------------------------------------


async def test_an_unverified_address_needs_double_opt_in(
    as_role: Callable[..., Caller], anonymous: Caller, events: EventTap, omni_infra: Infra, db: Database
) -> None:
    customer = new_customer()
    await with_email(omni_infra, db, customer, verified=False)
    me = as_role(customer, "customer")
    pending = await me.SetConsent(
        set_consent(customer, ch.CHANNEL_EMAIL, "offers", GRANTED, evidence="footer form v2")
    )
    assert pending.state == PENDING
    request = await events.wait_for(ev.ConsentConfirmationRequestedEvent, lambda m: m.consent == pending.name)
    assert request.channel == ch.CHANNEL_EMAIL and request.destination.endswith("@example.com")
    assert request.token and request.expire_time.seconds > 0

    # PENDING never counts as consent.
    decision = await me.DecideContact(
        svc.DecideContactRequest(name=f"{customer}/preferences", topic="offers", channel=ch.CHANNEL_EMAIL)
    )
    assert not decision.allowed and decision.reasons == [res.DECISION_REASON_PENDING_CONFIRMATION]

    confirmed = await anonymous.ConfirmConsent(
        svc.ConfirmConsentRequest(token=request.token, evidence="page v1")
    )
    assert confirmed.state == GRANTED and confirmed.name == pending.name
    assert confirmed.source.recorded_by == customer
    assert "double opt-in confirmed" in confirmed.source.evidence

    # Single use.
    error = await rpc_error(anonymous.ConfirmConsent(svc.ConfirmConsentRequest(token=request.token)))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and reason(error) == "CONFIRMATION_TOKEN_USED"
    error = await rpc_error(anonymous.ConfirmConsent(svc.ConfirmConsentRequest(token="made-up")))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    entries = await history(me, pending.name)
    assert [e.state for e in entries] == [GRANTED, PENDING]


async def test_a_verified_address_or_another_basis_grants_at_once(
    as_role: Callable[..., Caller], omni_infra: Infra, db: Database
) -> None:
    customer = new_customer()
    await with_phone(omni_infra, db, customer, verified=True)
    me = as_role(customer, "customer")
    sms = await me.SetConsent(set_consent(customer, ch.CHANNEL_SMS, "offers", GRANTED))
    assert sms.state == GRANTED
    contract = await me.SetConsent(
        set_consent(customer, ch.CHANNEL_EMAIL, "orders", GRANTED, basis=res.LEGAL_BASIS_CONTRACT)
    )
    assert contract.state == GRANTED


async def test_a_new_request_supersedes_the_old_token(
    as_role: Callable[..., Caller], anonymous: Caller, events: EventTap
) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    first = await me.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "news", GRANTED))
    one = await events.wait_for(ev.ConsentConfirmationRequestedEvent, lambda m: m.consent == first.name)
    await me.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "news", GRANTED))
    two = await events.wait_for(
        ev.ConsentConfirmationRequestedEvent, lambda m: m.consent == first.name and m.token != one.token
    )
    error = await rpc_error(anonymous.ConfirmConsent(svc.ConfirmConsentRequest(token=one.token)))
    assert reason(error) == "CONFIRMATION_TOKEN_SUPERSEDED"
    assert (await anonymous.ConfirmConsent(svc.ConfirmConsentRequest(token=two.token))).state == GRANTED


async def test_an_expired_request_drops_to_denied_with_a_ledger_entry(
    as_role: Callable[..., Caller], anonymous: Caller, events: EventTap, db: Database
) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    pending = await me.SetConsent(set_consent(customer, ch.CHANNEL_SMS, "offers", GRANTED))
    request = await events.wait_for(ev.ConsentConfirmationRequestedEvent, lambda m: m.consent == pending.name)
    # Move the request's expiry into the past, as if its three days had passed; the sweeper runs
    # every 0.2 s in these tests.
    async with db.transaction() as session:
        await session.execute(
            text("UPDATE consents SET expire_time = now() - interval '1 second' WHERE id = :id"),
            {"id": pending.name.rsplit("/", 1)[1]},
        )

    async def denied() -> bool:
        return (await me.GetConsent(svc.GetConsentRequest(name=pending.name))).state == DENIED

    await eventually(denied, 10)
    entries = await history(me, pending.name)
    assert (entries[0].state, entries[0].previous_state) == (DENIED, PENDING)
    assert entries[0].source.recorded_by == "serviceClients/omni-preferences"
    error = await rpc_error(anonymous.ConfirmConsent(svc.ConfirmConsentRequest(token=request.token)))
    assert reason(error) == "CONFIRMATION_TOKEN_EXPIRED"
    assert (await me.GetConsent(svc.GetConsentRequest(name=pending.name))).state == DENIED


async def test_a_token_past_its_expiry_confirms_nothing_even_before_the_sweeper(
    as_role: Callable[..., Caller], anonymous: Caller, events: EventTap, db: Database
) -> None:
    customer = new_customer()
    me = as_role(customer, "customer")
    pending = await me.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "tips", GRANTED))
    request = await events.wait_for(ev.ConsentConfirmationRequestedEvent, lambda m: m.consent == pending.name)
    async with db.transaction() as session:
        await session.execute(
            text(
                "UPDATE confirmation_tokens SET expire_time = now() - interval '1 second'"
                " WHERE consent_id = :id"
            ),
            {"id": pending.name.rsplit("/", 1)[1]},
        )
    error = await rpc_error(anonymous.ConfirmConsent(svc.ConfirmConsentRequest(token=request.token)))
    assert reason(error) == "CONFIRMATION_TOKEN_EXPIRED"
    assert (await me.GetConsent(svc.GetConsentRequest(name=pending.name))).state == DENIED
