"""Consents and their ledger: SetConsent, double opt-in (request, confirm, expiry), reads.

Every change of a consent goes through ``write``: the consent row, its ledger entry and (when the
state or legal basis changed) the ConsentChangedEvent, in the caller's transaction. A GRANTED
consent for e-mail or SMS on the basis of consent, given for an address that is not verified,
becomes PENDING_CONFIRMATION instead: a single-use token (only its SHA-256 is stored) goes to
messaging in a ConsentConfirmationRequestedEvent, and the consent is GRANTED only when the token
is posted back to ConfirmConsent before it expires. An unconfirmed request expires to DENIED
(sweeper), with its own ledger entry. Requesting again supersedes the previous token.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.preferences.v1 import events_pb2 as ev
from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2
from omni_runtime.context import ChannelInfo, current_channel, current_principal
from omni_runtime.db.engine import after_commit
from omni_runtime.db.idempotency import once
from omni_runtime.errors import Aborted, FailedPrecondition, NotFound
from omni_runtime.listing import Field, Kind, Listing, ListQuery
from omni_runtime.timestamps import to_proto, utcnow
from services.preferences import contact_points, convert, metrics, store
from services.preferences.domain import DOMAIN, channels
from services.preferences.txn import SERVICE_PRINCIPAL, Unit

GRANTED = res.CONSENT_STATE_GRANTED
DENIED = res.CONSENT_STATE_DENIED
WITHDRAWN = res.CONSENT_STATE_WITHDRAWN
PENDING = res.CONSENT_STATE_PENDING_CONFIRMATION
c, e = store.consents, store.consent_events

CONSENTS = Listing(
    fields={
        "channel": Field(Kind.ENUM, channel_pb2.Channel, sql=c.c.channel),
        "topic": Field(Kind.STRING, sql=c.c.topic),
        "state": Field(Kind.ENUM, res.ConsentState, sql=c.c.state),
        "legal_basis": Field(Kind.ENUM, res.LegalBasis, sql=c.c.legal_basis),
        "update_time": Field(Kind.TIMESTAMP, sql=c.c.update_time),
    },
    order_by={"channel": c.c.channel, "topic": c.c.topic, "update_time": c.c.update_time},
    default_order="channel, topic",
    tiebreak=[c.c.id],
    domain=DOMAIN,
    max_page_size=200,
)
CONSENT_EVENTS = Listing(
    fields={
        "channel": Field(Kind.ENUM, channel_pb2.Channel, sql=e.c.channel),
        "topic": Field(Kind.STRING, sql=e.c.topic),
        "state": Field(Kind.ENUM, res.ConsentState, sql=e.c.state),
        "legal_basis": Field(Kind.ENUM, res.LegalBasis, sql=e.c.legal_basis),
        "create_time": Field(Kind.TIMESTAMP, sql=e.c.create_time),
        "source.recorded_by": Field(Kind.STRING, sql=e.c.recorded_by),
        "source.channel.channel": Field(Kind.ENUM, channel_pb2.Channel, sql=e.c.source_channel),
    },
    order_by={"create_time": e.c.create_time},
    default_order="create_time desc",
    tiebreak=[e.c.seq],
    domain=DOMAIN,
    max_page_size=500,
)


class TokenState(enum.IntEnum):
    OPEN = 1
    USED = 2
    SUPERSEDED = 3
    EXPIRED = 4


@dataclass(frozen=True, slots=True)
class Source:
    """Who recorded a consent decision, through which channel, with what evidence."""

    channel: ChannelInfo
    recorded_by: str
    evidence: str = ""

    @classmethod
    def of_call(cls, given: res.ConsentSource | None = None) -> Source:
        """The caller's token says who; the request's source channel, else the call's metadata, where."""
        channel = current_channel.get()
        if given is not None and given.channel.channel:
            channel = ChannelInfo(given.channel.channel, given.channel.store, given.channel.device)
        return cls(channel, current_principal.get().subject, given.evidence if given is not None else "")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def find(
    session: AsyncSession, customer_id: str, channel: int, topic: str, *, lock: bool = False
) -> Any:
    statement = select(c).where(c.c.customer_id == customer_id, c.c.channel == channel, c.c.topic == topic)
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).first()


async def write(
    session: AsyncSession,
    unit: Unit,
    *,
    customer_id: str,
    channel: int,
    topic: str,
    state: int,
    legal_basis: int,
    source: Source,
    now: datetime,
    current: Any | None,
    cause: str,
    expire_time: datetime | None = None,
    destination: str = "",
) -> Any:
    """Change (or create) one consent, append its ledger entry, announce a real change."""
    values: dict[str, Any] = {
        "state": state,
        "legal_basis": legal_basis,
        "source_channel": source.channel.channel,
        "source_store": source.channel.store,
        "source_device": source.channel.device,
        "recorded_by": source.recorded_by,
        "evidence": source.evidence,
        "expire_time": expire_time,
        "destination": destination,
        "update_time": now,
    }
    if state == GRANTED and (current is None or current.state != GRANTED):
        values["grant_time"] = now
    elif state != GRANTED:
        values["grant_time"] = None
    statement: Any
    if current is None:
        statement = c.insert().values(
            id=uuid.uuid4().hex,
            customer_id=customer_id,
            channel=channel,
            topic=topic,
            create_time=now,
            **values,
        )
    else:
        statement = update(c).where(c.c.id == current.id).values(version=c.c.version + 1, **values)
    row = (await session.execute(statement.returning(*c.c))).one()
    if current is not None and current.state == PENDING:
        await _close_tokens(session, row.id, TokenState.SUPERSEDED)
    previous = current.state if current is not None else res.CONSENT_STATE_UNSPECIFIED
    changed = current is None or current.state != state or current.legal_basis != legal_basis
    await _append(session, unit, row, previous, source, now, cause, announce=changed)
    return row


async def remove(
    session: AsyncSession, unit: Unit, current: Any, source: Source, now: datetime, cause: str
) -> None:
    """Take a consent back to "never recorded" (an unmerge undoing what a merge created): the row
    goes, the ledger says so with state UNSPECIFIED, and so does the ConsentChangedEvent."""
    await session.execute(c.delete().where(c.c.id == current.id))
    await _close_tokens(session, current.id, TokenState.SUPERSEDED)
    gone = {**current._mapping, "state": res.CONSENT_STATE_UNSPECIFIED}
    await _append(session, unit, SimpleNamespace(**gone), current.state, source, now, cause, announce=True)


async def _append(
    session: AsyncSession,
    unit: Unit,
    row: Any,
    previous: int,
    source: Source,
    now: datetime,
    cause: str,
    *,
    announce: bool,
) -> None:
    """The ledger entry of a change to ``row`` (as it is now), and its event when ``announce``."""
    event_id = uuid.uuid4().hex
    await session.execute(
        e.insert().values(
            id=event_id,
            consent_id=row.id,
            customer_id=row.customer_id,
            channel=row.channel,
            topic=row.topic,
            state=row.state,
            previous_state=previous,
            legal_basis=row.legal_basis,
            source_channel=source.channel.channel,
            source_store=source.channel.store,
            source_device=source.channel.device,
            recorded_by=source.recorded_by,
            evidence=source.evidence,
            create_time=now,
        )
    )
    if announce:
        await unit.outbox.emit(
            session,
            ev.ConsentChangedEvent(
                consent=convert.consent_name(row.customer_id, row.id),
                consent_event=convert.event_name(row.customer_id, row.id, event_id),
                customer=convert.customer_name(row.customer_id),
                channel=row.channel,
                topic=row.topic,
                state=row.state,
                previous_state=previous,  # type: ignore[arg-type]
                legal_basis=row.legal_basis,
                source=res.ConsentSource(
                    channel=source.channel.to_proto(),
                    recorded_by=source.recorded_by,
                    evidence=source.evidence,
                ),
                occur_time=to_proto(now),
            ),
        )
    labels = (channels.name(row.channel), res.ConsentState.Name(row.state), cause)
    after_commit(session, lambda: metrics.CONSENT_CHANGES.labels(*labels).inc())


async def _close_tokens(session: AsyncSession, consent_id: str, state: TokenState) -> None:
    t = store.confirmation_tokens
    await session.execute(
        update(t).where(t.c.consent_id == consent_id, t.c.state == TokenState.OPEN).values(state=state)
    )


async def require_contactable(session: AsyncSession, customer_id: str) -> None:
    """Consents are recorded for live customers only (a merged one's belong to the survivor)."""
    cs = store.customer_states
    row = (await session.execute(select(cs).where(cs.c.customer_id == customer_id))).first()
    if row is None:
        return
    if row.state == store.MERGED:
        raise FailedPrecondition(
            f"customers/{customer_id} was merged into {row.merged_into}; record consents there",
            reason="CUSTOMER_MERGED",
            domain=DOMAIN,
            metadata={"merged_into": row.merged_into},
            violations=[("CUSTOMER_MERGED", f"customers/{customer_id}", "merged into " + row.merged_into)],
        )
    raise FailedPrecondition(f"customers/{customer_id} was erased", reason="CUSTOMER_ERASED", domain=DOMAIN)


async def _language(session: AsyncSession, customer_id: str) -> str:
    p = store.preferences
    return str(
        (await session.execute(select(p.c.language_code).where(p.c.customer_id == customer_id))).scalar()
        or ""
    )


async def _request_confirmation(
    session: AsyncSession,
    unit: Unit,
    customer_id: str,
    current: Any | None,
    legal_basis: int,
    src: Source,
    channel: int,
    topic: str,
    destination: str,
    now: datetime,
) -> Any:
    token = secrets.token_urlsafe(32)
    expire = now + unit.config.confirmation_ttl
    row = await write(
        session,
        unit,
        customer_id=customer_id,
        channel=channel,
        topic=topic,
        state=PENDING,
        legal_basis=legal_basis,
        source=src,
        now=now,
        current=current,
        cause="set",
        expire_time=expire,
        destination=destination,
    )
    await session.execute(
        store.confirmation_tokens.insert().values(
            token_hash=token_hash(token),
            consent_id=row.id,
            customer_id=customer_id,
            state=TokenState.OPEN,
            expire_time=expire,
            create_time=now,
        )
    )
    await unit.outbox.emit(
        session,
        ev.ConsentConfirmationRequestedEvent(
            consent=convert.consent_name(customer_id, row.id),
            customer=convert.customer_name(customer_id),
            channel=channel,  # type: ignore[arg-type]
            topic=topic,
            destination=destination,
            token=token,
            expire_time=to_proto(expire),
            language_code=await _language(session, customer_id),
            channel_context=src.channel.to_proto(),
            occur_time=to_proto(now),
        ),
    )
    return row


async def set_consent(unit: Unit, request: svc.SetConsentRequest, customer_id: str) -> res.Consent:
    async def work(session: AsyncSession) -> res.Consent:
        now = utcnow()
        await store.lock_customer(session, customer_id)
        await require_contactable(session, customer_id)
        current = await find(session, customer_id, request.channel, request.topic)
        if request.etag and (current is None or convert.version_of(request.etag) != current.version):
            raise Aborted(
                "the consent changed since it was read",
                current_etag=convert.etag(current.version) if current is not None else "",
                domain=DOMAIN,
            )
        state, basis = request.state, request.legal_basis or res.LEGAL_BASIS_CONSENT
        if state == WITHDRAWN and (current is None or current.state != GRANTED):
            subject = convert.consent_name(customer_id, current.id) if current is not None else request.parent
            raise FailedPrecondition(
                "only a GRANTED consent can be withdrawn; record DENIED instead",
                reason="CONSENT_NOT_GRANTED",
                domain=DOMAIN,
                violations=[("CONSENT_NOT_GRANTED", subject, "the consent is not GRANTED")],
            )
        src = Source.of_call(request.source if request.HasField("source") else None)
        needs_opt_in = (
            state == GRANTED
            and basis == res.LEGAL_BASIS_CONSENT
            and request.channel in channels.DOUBLE_OPT_IN
            and (current is None or current.state != GRANTED)
        )
        if needs_opt_in:
            points = await contact_points.of_customer(session, customer_id, request.channel)
            address = contact_points.destination(points, request.channel)
            if address is None or not address.verified:
                row = await _request_confirmation(
                    session,
                    unit,
                    customer_id,
                    current,
                    basis,
                    src,
                    request.channel,
                    request.topic,
                    address.value if address is not None else "",
                    now,
                )
                return convert.consent(row)
        row = await write(
            session,
            unit,
            customer_id=customer_id,
            channel=request.channel,
            topic=request.topic,
            state=state,
            legal_basis=basis,
            source=src,
            now=now,
            current=current,
            cause="set",
        )
        return convert.consent(row)

    return await once(
        unit.db, f"preferences.SetConsent/{customer_id}", request.request_id, request, res.Consent, work
    )


def _token_refused(outcome: str, message: str) -> FailedPrecondition:
    metrics.CONFIRMATIONS.labels(outcome).inc()
    reason = f"CONFIRMATION_TOKEN_{outcome.upper()}"
    return FailedPrecondition(message, reason=reason, domain=DOMAIN, violations=[(reason, "token", message)])


async def confirm(unit: Unit, request: svc.ConfirmConsentRequest) -> res.Consent:
    t = store.confirmation_tokens
    hashed = token_hash(request.token)

    async def work(session: AsyncSession) -> res.Consent | FailedPrecondition:
        now = utcnow()
        token = (await session.execute(select(t).where(t.c.token_hash == hashed))).first()
        if token is None:
            metrics.CONFIRMATIONS.labels("unknown").inc()
            raise NotFound(
                "confirmation token",
                "no such confirmation token",
                reason="CONFIRMATION_TOKEN_UNKNOWN",
                domain=DOMAIN,
            )
        await store.lock_customer(session, token.customer_id)
        token = (await session.execute(select(t).where(t.c.token_hash == hashed))).one()
        if token.state == TokenState.USED:
            raise _token_refused("used", "this confirmation was already used")
        if token.state == TokenState.SUPERSEDED:
            raise _token_refused("superseded", "a newer confirmation was requested, or the consent changed")
        consent = (await session.execute(select(c).where(c.c.id == token.consent_id))).first()
        if token.state == TokenState.EXPIRED or token.expire_time <= now:
            if consent is not None and consent.state == PENDING:
                await _expire(session, unit, consent, now)  # committed although the call fails
            return _token_refused("expired", "the confirmation expired; ask for the consent again")
        if consent is None or consent.state != PENDING:
            raise _token_refused("superseded", "the consent changed since the confirmation was requested")
        evidence = "double opt-in confirmed" + (f": {request.evidence}" if request.evidence else "")
        src = Source(current_channel.get(), convert.customer_name(consent.customer_id), evidence)
        row = await write(
            session,
            unit,
            customer_id=consent.customer_id,
            channel=consent.channel,
            topic=consent.topic,
            state=GRANTED,
            legal_basis=consent.legal_basis,
            source=src,
            now=now,
            current=consent,
            cause="confirm",
        )
        await session.execute(update(t).where(t.c.token_hash == hashed).values(state=TokenState.USED))
        after_commit(session, lambda: metrics.CONFIRMATIONS.labels("confirmed").inc())
        return convert.consent(row)

    return await once(unit.db, "preferences.ConfirmConsent", request.request_id, request, res.Consent, work)


async def _expire(session: AsyncSession, unit: Unit, consent: Any, now: datetime) -> None:
    evidence = f"double opt-in not confirmed by {consent.expire_time.isoformat()}"
    await _close_tokens(session, consent.id, TokenState.EXPIRED)
    await write(
        session,
        unit,
        customer_id=consent.customer_id,
        channel=consent.channel,
        topic=consent.topic,
        state=DENIED,
        legal_basis=consent.legal_basis,
        source=Source(ChannelInfo(), SERVICE_PRINCIPAL, evidence),
        now=now,
        current=consent,
        cause="expire",
    )


async def expire_due(unit: Unit, batch: int) -> int:
    """Drop up to ``batch`` expired pending consents to DENIED; replicas share the work."""
    async with unit.db.transaction() as session:
        now = utcnow()
        due = (
            await session.execute(
                select(c)
                .where(c.c.state == PENDING, c.c.expire_time <= now)
                .order_by(c.c.expire_time)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for consent in due:
            await _expire(session, unit, consent, now)
    return len(due)


# --- reads -------------------------------------------------------------------------------------


async def get_consent(unit: Unit, customer_id: str, consent_id: str) -> res.Consent:
    async with unit.db.read() as session:
        row = (
            await session.execute(select(c).where(c.c.id == consent_id, c.c.customer_id == customer_id))
        ).first()
    if row is None:
        raise NotFound(convert.consent_name(customer_id, consent_id), domain=DOMAIN)
    return convert.consent(row)


async def list_consents(unit: Unit, customer_id: str, query: ListQuery) -> svc.ListConsentsResponse:
    async with unit.db.transaction() as session:
        rows, token = await query.page(session, select(c).where(c.c.customer_id == customer_id))
    return svc.ListConsentsResponse(consents=[convert.consent(r) for r in rows], next_page_token=token)


async def list_consent_events(
    unit: Unit, customer_id: str, consent_id: str, query: ListQuery
) -> svc.ListConsentEventsResponse:
    statement = select(e).where(e.c.customer_id == customer_id)
    async with unit.db.transaction() as session:
        if consent_id != "-":
            found = (
                await session.execute(
                    select(c.c.id).where(c.c.id == consent_id, c.c.customer_id == customer_id)
                )
            ).first()
            # The ledger outlives an erased consent row; its entries are still listed by id.
            if (
                found is None
                and (
                    await session.execute(
                        select(e.c.seq)
                        .where(e.c.consent_id == consent_id, e.c.customer_id == customer_id)
                        .limit(1)
                    )
                ).first()
                is None
            ):
                raise NotFound(convert.consent_name(customer_id, consent_id), domain=DOMAIN)
            statement = statement.where(e.c.consent_id == consent_id)
        rows, token = await query.page(session, statement)
    return svc.ListConsentEventsResponse(
        consent_events=[convert.consent_event(r) for r in rows], next_page_token=token
    )
