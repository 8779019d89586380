"""DecideContact (the hot path) and RecordContact: "may we contact this customer now, and how?"

A decision reads everything it needs about the customer in one statement (preferences, the
consents for the topic and "*", the channels with a contact point, whether the customer can be
contacted at all, and the marketing contacts near the moment), then applies the pure rules of
``domain.decision``. A reserving decision (``reserve``) and a RecordContact claim
(``only_within_caps``) take the customer's advisory lock first and count the contact in the same
transaction, so concurrent senders are serialised per customer and a cap is never exceeded; a
plain RecordContact records a contact already made, always. All are idempotent by request id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import empty_pb2
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import SmallInteger, Text

from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import resources_pb2 as res
from omni_runtime.db.engine import Reader, after_commit
from omni_runtime.db.idempotency import once
from omni_runtime.errors import ResourceExhausted
from omni_runtime.timestamps import to_proto, utcnow
from services.preferences import convert, metrics, store
from services.preferences.domain import DOMAIN, checks
from services.preferences.domain import decision as rules
from services.preferences.domain.caps import Contact, blocked_until
from services.preferences.domain.checks import MAX_CAP_PERIOD
from services.preferences.txn import Unit

_SITUATION = text(
    """
    SELECT
      (SELECT json_build_object('preferred', preferred_channels, 'quiet', quiet_hours,
                                'zone', time_zone, 'caps', frequency_caps, 'language', language_code)
         FROM preferences WHERE customer_id = :c) AS prefs,
      (SELECT language_code FROM profile_facts WHERE customer_id = :c) AS profile_language,
      (SELECT coalesce(json_agg(json_build_array(id, channel, topic, state, legal_basis)), '[]')
         FROM consents WHERE customer_id = :c AND topic IN (:topic, '*')) AS consents,
      (SELECT coalesce(array_agg(DISTINCT channel), '{}')
         FROM contact_points WHERE customer_id = :c) AS points,
      (SELECT state FROM customer_states WHERE customer_id = :c) AS blocked,
      (SELECT coalesce(json_agg(json_build_array(channel, topic, contact_time)), '[]')
         FROM contacts WHERE customer_id = :c AND :marketing
          AND contact_time > :since AND contact_time < :until) AS contacts
    """
).columns(
    prefs=JSONB,
    profile_language=Text,
    consents=JSONB,
    points=ARRAY(SmallInteger),
    blocked=SmallInteger,
    contacts=JSONB,
)


def _params(customer_id: str, topic: str, purpose: int, at: datetime) -> dict[str, Any]:
    return {
        "c": customer_id,
        "topic": topic,
        "marketing": purpose == rules.MARKETING,
        "since": at - MAX_CAP_PERIOD,
        "until": at + MAX_CAP_PERIOD,
    }


async def situation(
    reader: Reader, unit: Unit, customer_id: str, topic: str, purpose: int, at: datetime
) -> tuple[rules.Situation, str]:
    """What the decision depends on, and the language to write in (preferences, then the
    profile, then the business default): one statement, on a read connection (a plain decision)
    or in a reservation's transaction."""
    row = (await reader.execute(_SITUATION, _params(customer_id, topic, purpose, at))).one()
    prefs: dict[str, Any] = row.prefs or {}
    config = unit.config
    zone = checks.zone(prefs.get("zone") or "") or config.default_zone
    consents = [
        rules.ConsentView(convert.consent_name(customer_id, cid), ch, t, state, basis)
        for cid, ch, t, state, basis in row.consents
    ]
    language = prefs.get("language") or row.profile_language or config.default_language
    return rules.Situation(
        preferred=tuple(prefs.get("preferred") or ()),
        consents=rules.effective(consents, topic),
        contact_points=frozenset(row.points or ()),
        windows=convert.windows(prefs.get("quiet") or ()) + config.business_quiet_hours,
        zone=zone,
        caps=convert.caps(prefs.get("caps") or ()) + config.business_caps,
        contacts=tuple(Contact(ch, t, datetime.fromisoformat(when)) for ch, t, when in row.contacts),
        contactable=row.blocked is None,
    ), language


def _evaluation(v: rules.Verdict) -> svc.ChannelEvaluation:
    out = svc.ChannelEvaluation(channel=v.channel, allowed=v.allowed, reasons=v.reasons, consent=v.consent)  # type: ignore[arg-type]
    if v.next_allowed_time is not None:
        out.next_allowed_time.CopyFrom(to_proto(v.next_allowed_time))
    return out


def _count_decision(purpose: int, verdict: rules.Verdict) -> None:
    blocking = [r for r in verdict.reasons if purpose == rules.MARKETING or r not in rules.NOTES]
    reason = "allowed"
    if blocking:
        reason = res.DecisionReason.Name(blocking[0]).removeprefix("DECISION_REASON_").lower()  # type: ignore[arg-type]
    purpose_label = res.ContactPurpose.Name(purpose).removeprefix("CONTACT_PURPOSE_").lower()  # type: ignore[arg-type]
    metrics.DECISIONS.labels(purpose_label, "allowed" if verdict.allowed else "refused", reason).inc()


def _response(d: rules.Decision, language: str, reserved: bool = False) -> svc.DecideContactResponse:
    v = d.verdict
    out = svc.DecideContactResponse(
        language_code=language,
        reserved=reserved,
        allowed=v.allowed,
        channel=v.channel,  # type: ignore[arg-type]
        reasons=v.reasons,  # type: ignore[arg-type]
        fallback_channels=d.fallbacks,  # type: ignore[arg-type]
        evaluations=[_evaluation(x) for x in d.evaluations],
    )
    if v.next_allowed_time is not None:
        out.next_allowed_time.CopyFrom(to_proto(v.next_allowed_time))
    return out


async def decide_contact(
    unit: Unit, request: svc.DecideContactRequest, customer_id: str, purpose: int
) -> svc.DecideContactResponse:
    at = (
        request.evaluate_time.ToDatetime(tzinfo=utcnow().tzinfo)
        if request.HasField("evaluate_time")
        else utcnow()
    )

    def run(s: rules.Situation) -> rules.Decision:
        return rules.decide(
            s,
            request.topic,
            purpose,
            at,
            requested=request.channel,
            eligible=list(request.eligible_channels),
            default_order=unit.config.channel_order,
        )

    # Only marketing contacts are counted, so only they make a reservation: any other decision
    # is a read, answered without a transaction whether or not `reserve` is set.
    if not request.reserve or purpose != rules.MARKETING:
        async with unit.db.read() as connection:  # one statement: no transaction needed
            s, language = await situation(connection, unit, customer_id, request.topic, purpose, at)
        decision = run(s)
        _count_decision(purpose, decision.verdict)
        return _response(decision, language)

    async def work(session: AsyncSession) -> svc.DecideContactResponse:
        await store.lock_customer(session, customer_id)
        s, language = await situation(session, unit, customer_id, request.topic, purpose, at)
        decision = run(s)
        verdict = decision.verdict
        reserved = verdict.allowed
        if reserved:
            await _count(session, customer_id, verdict.channel, request.topic, at, request.request_id)
            after_commit(session, lambda: metrics.CONTACTS.labels("reserved", "counted").inc())
        after_commit(session, lambda: _count_decision(purpose, verdict))
        return _response(decision, language, reserved)

    return await once(
        unit.db,
        f"preferences.DecideContact/{customer_id}",
        request.request_id,
        request,
        svc.DecideContactResponse,
        work,
    )


async def _count(
    session: AsyncSession, customer_id: str, channel: int, topic: str, at: datetime, request_id: str
) -> None:
    await session.execute(
        store.contacts.insert().values(
            customer_id=customer_id, channel=channel, topic=topic, contact_time=at, request_id=request_id
        )
    )


async def record_contact(unit: Unit, request: svc.RecordContactRequest, customer_id: str) -> empty_pb2.Empty:
    at = (
        request.contact_time.ToDatetime(tzinfo=utcnow().tzinfo)
        if request.HasField("contact_time")
        else utcnow()
    )
    if request.purpose not in (rules.MARKETING, res.CONTACT_PURPOSE_UNSPECIFIED):
        return empty_pb2.Empty()  # only marketing is capped, so only marketing is counted

    async def work(session: AsyncSession) -> empty_pb2.Empty:
        await store.lock_customer(session, customer_id)
        if not request.only_within_caps:  # a contact already made: a fact, always counted
            await _count(session, customer_id, request.channel, request.topic, at, request.request_id)
            after_commit(session, lambda: metrics.CONTACTS.labels("recorded", "counted").inc())
            return empty_pb2.Empty()
        s, _ = await situation(session, unit, customer_id, request.topic, rules.MARKETING, at)
        free = blocked_until(s.caps, s.contacts, request.channel, request.topic, at)
        if free is not None:
            metrics.CONTACTS.labels("recorded", "capped").inc()
            raise ResourceExhausted(
                "a frequency cap is reached; the contact was not counted and must not be made",
                reason="FREQUENCY_CAP",
                domain=DOMAIN,
                metadata={"next_allowed_time": free.isoformat(timespec="seconds")},
            )
        await _count(session, customer_id, request.channel, request.topic, at, request.request_id)
        after_commit(session, lambda: metrics.CONTACTS.labels("recorded", "counted").inc())
        return empty_pb2.Empty()

    return await once(
        unit.db,
        f"preferences.RecordContact/{customer_id}",
        request.request_id,
        request,
        empty_pb2.Empty,
        work,
    )
