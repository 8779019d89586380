"""DecideContact and RecordContact against the real service: every reason code, the choice of a
channel, quiet hours across midnight and DST in the customer's zone, caps under concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.type import timeofday_pb2
from sqlalchemy import text

from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.db.engine import Database
from omni_runtime.testing.calls import Caller, details, reason, rpc_error
from omni_runtime.testing.plugin import Infra
from tests.preferences.conftest import new_customer, rid, set_consent, with_email, with_phone

R = res.DecisionReason
GRANTED, DENIED, WITHDRAWN = res.CONSENT_STATE_GRANTED, res.CONSENT_STATE_DENIED, res.CONSENT_STATE_WITHDRAWN
MARKETING, TRANSACTIONAL, URGENT = (
    res.CONTACT_PURPOSE_MARKETING,
    res.CONTACT_PURPOSE_TRANSACTIONAL,
    res.CONTACT_PURPOSE_URGENT,
)
BUCHAREST = ZoneInfo("Europe/Bucharest")
NOON = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)  # 12:00 in Bucharest


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def decide(
    customer: str, topic: str = "offers", *, at: datetime = NOON, **kw: object
) -> svc.DecideContactRequest:
    return svc.DecideContactRequest(
        name=f"{customer}/preferences", topic=topic, evaluate_time=stamp(at), **kw
    )


def reasons(response: svc.DecideContactResponse) -> dict[int, list[int]]:
    return {e.channel: list(e.reasons) for e in response.evaluations}


def quiet(start: int, end: int, *channels: int) -> res.QuietHours:
    return res.QuietHours(
        start_time=timeofday_pb2.TimeOfDay(hours=start),
        end_time=timeofday_pb2.TimeOfDay(hours=end),
        channels=channels,
    )


async def prefs(api: Caller, customer: str, **fields: object) -> res.Preferences:
    return await api.UpdatePreferences(
        svc.UpdatePreferencesRequest(
            preferences=res.Preferences(name=f"{customer}/preferences", **fields),
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
            request_id=rid(),
        )
    )


async def reachable(infra: Infra, db: Database, api: Caller, customer: str) -> None:
    """A customer with a verified e-mail and phone who agreed to offers on e-mail and SMS."""
    await with_email(infra, db, customer)
    await with_phone(infra, db, customer)
    for channel in (ch.CHANNEL_EMAIL, ch.CHANNEL_SMS):
        await api.SetConsent(set_consent(customer, channel, "offers", GRANTED))


async def test_marketing_reason_codes(backend: Caller, omni_infra: Infra, db: Database) -> None:
    customer = new_customer()
    await with_email(omni_infra, db, customer)
    # No consent at all; a consent on another topic does not count.
    await backend.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "news", GRANTED))
    got = await backend.DecideContact(decide(customer, channel=ch.CHANNEL_EMAIL))
    assert not got.allowed and list(got.reasons) == [R.DECISION_REASON_NO_CONSENT]
    assert got.channel == ch.CHANNEL_EMAIL and not got.HasField("next_allowed_time")

    await backend.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "offers", DENIED))
    got = await backend.DecideContact(decide(customer, channel=ch.CHANNEL_EMAIL))
    assert list(got.reasons) == [R.DECISION_REASON_CONSENT_DENIED]
    assert got.evaluations[0].consent.startswith(f"{customer}/consents/")

    await backend.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "offers", GRANTED))
    assert (await backend.DecideContact(decide(customer, channel=ch.CHANNEL_EMAIL))).allowed
    await backend.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "offers", WITHDRAWN))
    got = await backend.DecideContact(decide(customer, channel=ch.CHANNEL_EMAIL))
    assert list(got.reasons) == [R.DECISION_REASON_CONSENT_WITHDRAWN]

    # Consent but no address: SMS without a phone.
    await backend.SetConsent(
        set_consent(customer, ch.CHANNEL_SMS, "*", GRANTED, basis=res.LEGAL_BASIS_LEGITIMATE_INTEREST)
    )
    got = await backend.DecideContact(decide(customer, channel=ch.CHANNEL_SMS))
    assert list(got.reasons) == [R.DECISION_REASON_NO_CONTACT_POINT]

    # A store till cannot be contacted.
    got = await backend.DecideContact(decide(customer, channel=ch.CHANNEL_STORE_POS))
    assert list(got.reasons) == [R.DECISION_REASON_CHANNEL_NOT_CONTACTABLE]


async def test_an_exact_topic_wins_over_the_channel_wildcard(
    backend: Caller, omni_infra: Infra, db: Database
) -> None:
    customer = new_customer()
    await with_email(omni_infra, db, customer)
    await backend.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "*", GRANTED))
    await backend.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "offers", DENIED))
    assert (await backend.DecideContact(decide(customer, "news", channel=ch.CHANNEL_EMAIL))).allowed
    got = await backend.DecideContact(decide(customer, "offers", channel=ch.CHANNEL_EMAIL))
    assert list(got.reasons) == [R.DECISION_REASON_CONSENT_DENIED]


async def test_the_channel_is_chosen_by_the_customer_order_with_fallbacks(
    backend: Caller, omni_infra: Infra, db: Database
) -> None:
    customer = new_customer()
    await reachable(omni_infra, db, backend, customer)
    await prefs(backend, customer, preferred_channels=[ch.CHANNEL_PUSH, ch.CHANNEL_SMS, ch.CHANNEL_EMAIL])
    got = await backend.DecideContact(decide(customer))
    # Push has no consent, so SMS is the first allowed preferred channel; e-mail is the fallback.
    assert got.allowed and got.channel == ch.CHANNEL_SMS
    assert list(got.fallback_channels) == [ch.CHANNEL_EMAIL]
    assert [e.channel for e in got.evaluations][:3] == [ch.CHANNEL_PUSH, ch.CHANNEL_SMS, ch.CHANNEL_EMAIL]
    assert reasons(got)[ch.CHANNEL_PUSH] == [R.DECISION_REASON_NO_CONSENT, R.DECISION_REASON_NO_CONTACT_POINT]
    # Marketing outside the preferred channels is refused; a transactional contact only notes it.
    assert R.DECISION_REASON_CHANNEL_NOT_PREFERRED in reasons(got)[ch.CHANNEL_WEB]
    web = await backend.DecideContact(
        decide(customer, "orders", channel=ch.CHANNEL_WEB, purpose=TRANSACTIONAL)
    )
    assert web.allowed and list(web.reasons) == [R.DECISION_REASON_CHANNEL_NOT_PREFERRED]
    # Eligible channels restrict the choice.
    only_email = await backend.DecideContact(decide(customer, eligible_channels=[ch.CHANNEL_EMAIL]))
    assert only_email.channel == ch.CHANNEL_EMAIL and not only_email.fallback_channels
    assert [e.channel for e in only_email.evaluations] == [ch.CHANNEL_EMAIL]
    # Nothing allowed: the answer names the first preferred channel and why it is refused.
    await backend.SetConsent(set_consent(customer, ch.CHANNEL_SMS, "offers", WITHDRAWN))
    await backend.SetConsent(set_consent(customer, ch.CHANNEL_EMAIL, "offers", WITHDRAWN))
    none = await backend.DecideContact(decide(customer))
    assert not none.allowed and none.channel == ch.CHANNEL_PUSH and not none.fallback_channels


async def test_transactional_and_urgent_rules(backend: Caller, omni_infra: Infra, db: Database) -> None:
    customer = new_customer()
    await with_phone(omni_infra, db, customer)
    await prefs(backend, customer, quiet_hours=[quiet(22, 8)], time_zone="Europe/Bucharest")
    night = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)  # 00:00 in Bucharest
    # No consent needed for an order update, but quiet hours hold it until 08:00 local.
    order = await backend.DecideContact(
        decide(customer, "orders", at=night, channel=ch.CHANNEL_SMS, purpose=TRANSACTIONAL)
    )
    assert not order.allowed and list(order.reasons) == [R.DECISION_REASON_QUIET_HOURS]
    assert order.next_allowed_time.ToDatetime(tzinfo=UTC) == datetime(2026, 6, 11, 5, 0, tzinfo=UTC)
    urgent = await backend.DecideContact(
        decide(customer, "security", at=night, channel=ch.CHANNEL_SMS, purpose=URGENT)
    )
    assert urgent.allowed and not urgent.reasons
    # A refusal is honoured whatever the purpose.
    await backend.SetConsent(set_consent(customer, ch.CHANNEL_SMS, "security", DENIED))
    refused = await backend.DecideContact(
        decide(customer, "security", at=night, channel=ch.CHANNEL_SMS, purpose=URGENT)
    )
    assert list(refused.reasons) == [R.DECISION_REASON_CONSENT_DENIED] and not refused.HasField(
        "next_allowed_time"
    )


async def test_quiet_hours_across_midnight_and_dst_in_the_customer_zone(
    backend: Caller, omni_infra: Infra, db: Database
) -> None:
    customer = new_customer()
    await reachable(omni_infra, db, backend, customer)
    await prefs(backend, customer, quiet_hours=[quiet(22, 8, ch.CHANNEL_SMS)], time_zone="Europe/Bucharest")
    # 23:30 on the night the clocks go forward: quiet until 08:00 EEST = 05:00 UTC.
    spring = datetime(2026, 3, 28, 21, 30, tzinfo=UTC)
    got = await backend.DecideContact(decide(customer, at=spring, channel=ch.CHANNEL_SMS))
    assert list(got.reasons) == [R.DECISION_REASON_QUIET_HOURS]
    assert got.next_allowed_time.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)
    assert list(got.fallback_channels) == [ch.CHANNEL_EMAIL], "quiet hours are for SMS only"
    # …and back: 08:00 EET = 06:00 UTC.
    autumn = datetime(2026, 10, 24, 21, 30, tzinfo=UTC)
    got = await backend.DecideContact(decide(customer, at=autumn, channel=ch.CHANNEL_SMS))
    assert got.next_allowed_time.ToDatetime(tzinfo=UTC) == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)
    # The window spans midnight: 07:59 is quiet, 08:00 is not.
    assert not (
        await backend.DecideContact(
            decide(customer, at=datetime(2026, 6, 11, 4, 59, tzinfo=UTC), channel=ch.CHANNEL_SMS)
        )
    ).allowed
    assert (
        await backend.DecideContact(
            decide(customer, at=datetime(2026, 6, 11, 5, 0, tzinfo=UTC), channel=ch.CHANNEL_SMS)
        )
    ).allowed


async def test_caps_hold_under_twenty_concurrent_record_contact_calls(
    backend: Caller, omni_infra: Infra, db: Database
) -> None:
    customer = new_customer()
    await reachable(omni_infra, db, backend, customer)
    week = duration_pb2.Duration(seconds=7 * 86400)
    await prefs(backend, customer, frequency_caps=[res.FrequencyCap(max_count=5, period=week)])
    record = [
        backend.RecordContact(
            svc.RecordContactRequest(
                name=f"{customer}/preferences",
                channel=ch.CHANNEL_EMAIL,
                topic="offers",
                request_id=rid(),
                only_within_caps=True,
            )
        )
        for _ in range(20)
    ]
    outcomes = await asyncio.gather(*record, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(outcomes) - len(refused) == 5
    assert {o.code() for o in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert (
        reason(refused[0]) == "FREQUENCY_CAP"
        and details(refused[0])["ErrorInfo"].metadata["next_allowed_time"]
    )
    async with db.transaction() as session:
        counted = (
            await session.execute(
                text("SELECT count(*) FROM contacts WHERE customer_id = :c"),
                {"c": customer.removeprefix("customers/")},
            )
        ).scalar()
    assert counted == 5
    got = await backend.DecideContact(decide(customer, at=datetime.now(UTC), channel=ch.CHANNEL_EMAIL))
    assert list(got.reasons) == [R.DECISION_REASON_FREQUENCY_CAP]
    next_time = got.next_allowed_time.ToDatetime(tzinfo=UTC)
    assert timedelta(days=6, hours=23) < next_time - datetime.now(UTC) <= timedelta(days=7)
    # Transactional contacts are never capped.
    assert (
        await backend.DecideContact(
            decide(customer, "orders", at=datetime.now(UTC), channel=ch.CHANNEL_EMAIL, purpose=TRANSACTIONAL)
        )
    ).allowed


async def test_reserving_decisions_count_once_and_never_exceed_a_cap(
    backend: Caller, omni_infra: Infra, db: Database
) -> None:
    customer = new_customer()
    await reachable(omni_infra, db, backend, customer)
    day = duration_pb2.Duration(seconds=86400)
    await prefs(
        backend, customer, frequency_caps=[res.FrequencyCap(channel=ch.CHANNEL_SMS, max_count=3, period=day)]
    )
    now = datetime.now(UTC).replace(microsecond=0)
    one = decide(customer, at=now, channel=ch.CHANNEL_SMS, reserve=True, request_id=rid())
    first = await backend.DecideContact(one)
    assert first.allowed and first.reserved and first.language_code == "en"
    assert await backend.DecideContact(one) == first, "a retry is answered, not counted"
    answers = await asyncio.gather(
        *(
            backend.DecideContact(
                decide(customer, at=now, channel=ch.CHANNEL_SMS, reserve=True, request_id=rid())
            )
            for _ in range(10)
        )
    )
    assert sum(a.allowed for a in answers) == 2 == sum(a.reserved for a in answers)
    assert all(list(a.reasons) == [R.DECISION_REASON_FREQUENCY_CAP] for a in answers if not a.allowed)
    # The cap is on SMS only: without a channel the decision falls back to e-mail.
    auto = await backend.DecideContact(
        decide(
            customer,
            at=now,
            reserve=True,
            request_id=rid(),
            eligible_channels=[ch.CHANNEL_SMS, ch.CHANNEL_EMAIL],
        )
    )
    assert auto.allowed and auto.channel == ch.CHANNEL_EMAIL
    error = await rpc_error(
        backend.DecideContact(decide(customer, reserve=True)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert reason(error) == "INVALID_ARGUMENT"


async def test_record_contact_is_idempotent_and_ignores_non_marketing(backend: Caller, db: Database) -> None:
    customer = new_customer()
    await prefs(
        backend,
        customer,
        language_code="ro-RO",
        frequency_caps=[res.FrequencyCap(max_count=1, period=duration_pb2.Duration(seconds=3600))],
    )
    request = svc.RecordContactRequest(
        name=f"{customer}/preferences", channel=ch.CHANNEL_CALL_CENTER, topic="offers", request_id=rid()
    )
    await backend.RecordContact(request)
    await backend.RecordContact(request)
    await backend.RecordContact(
        svc.RecordContactRequest(
            name=f"{customer}/preferences", channel=ch.CHANNEL_SMS, topic="orders", purpose=TRANSACTIONAL
        )
    )
    async with db.transaction() as session:
        counted = (
            await session.execute(
                text("SELECT count(*) FROM contacts WHERE customer_id = :c"),
                {"c": customer.removeprefix("customers/")},
            )
        ).scalar()
    assert counted == 1
    # A contact already made is counted even past a cap; decisions then wait for it to free up.
    await backend.RecordContact(
        svc.RecordContactRequest(
            name=f"{customer}/preferences", channel=ch.CHANNEL_CALL_CENTER, topic="offers"
        )
    )
    got = await backend.DecideContact(decide(customer, at=datetime.now(UTC), channel=ch.CHANNEL_WEB))
    assert R.DECISION_REASON_FREQUENCY_CAP in got.reasons and got.language_code == "ro-RO"


async def test_a_customer_decides_only_about_themselves(as_role: Callable[..., Caller]) -> None:
    me, other = new_customer(), new_customer()
    mine = as_role(me, "customer")
    assert not (await mine.DecideContact(decide(me))).allowed
    await rpc_error(mine.DecideContact(decide(other)), grpc.StatusCode.PERMISSION_DENIED)
    await rpc_error(
        mine.RecordContact(
            svc.RecordContactRequest(name=f"{me}/preferences", channel=ch.CHANNEL_SMS, topic="offers")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    agent = as_role("staffMembers/a1", "agent")
    await agent.RecordContact(
        svc.RecordContactRequest(name=f"{other}/preferences", channel=ch.CHANNEL_CALL_CENTER, topic="offers")
    )
