"""Notifications: accept (SendNotification and the platform's own event consumers), read, list,
and the state changes every path shares (suppress, finish), each with its event.

SendNotification asks preferences at once, so the caller learns right away when nothing may be
sent (SUPPRESSED); the consumers only enqueue (PENDING, ``decide``) and let the delivery worker
ask, so a burst of events never waits on preferences inside a consumer's transaction. Either way
the row is the durable record: once committed, the schedule delivers it (``schedule``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import channel_pb2
from omni_runtime.context import ChannelInfo, current_channel
from omni_runtime.db.engine import after_commit
from omni_runtime.db.idempotency import once
from omni_runtime.errors import FieldViolation, InvalidArgument, NotFound
from omni_runtime.listing import Field, Kind, Listing, ListQuery, by_name
from services.messaging import convert, events, metrics, store, template_admin
from services.messaging.adapters.preferences import PreferencesRefused, PreferencesUnavailable
from services.messaging.domain import DOMAIN, plans
from services.messaging.domain import templates as rules
from services.messaging.unit import Unit

log = logging.getLogger("omni.messaging.notifications")

N = store.notifications
A = store.delivery_attempts
PENDING = res.NOTIFICATION_STATE_PENDING
SUPPRESSED = res.NOTIFICATION_STATE_SUPPRESSED
SEND_SCOPE = "messaging.SendNotification"
# Namespace of ids derived from other ids (event ids, request ids), so a redelivery or a retry
# finds the same notification and preferences counts a reserved contact once.
_IDS = uuid.UUID("5b1f0a52-8f4e-4a4b-9d0c-6d0e2f0b7a11")

NOTIFICATIONS = Listing(
    fields={
        "state": Field(Kind.ENUM, res.NotificationState, sql=N.c.state),
        "topic": Field(Kind.STRING, sql=N.c.topic),
        "template": Field(Kind.STRING, sql=by_name(N.c.template_id, "templates/")),
        "chosen_channel": Field(Kind.ENUM, channel_pb2.Channel, sql=N.c.chosen_channel),
        "subject_resource": Field(Kind.STRING, sql=N.c.subject_resource),
        "create_time": Field(Kind.TIMESTAMP, sql=N.c.create_time),
    },
    order_by={"create_time": N.c.create_time},
    default_order="create_time desc",
    tiebreak=[N.c.id],
    domain=DOMAIN,
)


def derived_id(*parts: str) -> str:
    return uuid.uuid5(_IDS, ":".join(parts)).hex


def decision_request_id(notification_id: str, decisions: int) -> str:
    """The request id of the n-th DecideContact for a notification: a retry re-uses it."""
    return str(uuid.uuid5(_IDS, f"decide:{notification_id}:{decisions}"))


@dataclass(frozen=True)
class NewNotification:
    """Everything needed to accept a notification, whichever path it comes by."""

    notification_id: str
    customer: str
    template: store.AnyRow
    topic: str
    purpose: int
    params: Mapping[str, str]
    requested_channel: int = 0
    subject_resource: str = ""
    expire_time: datetime | None = None
    request_id: str = ""
    by: ChannelInfo = field(default_factory=ChannelInfo)
    # A destination named by the requester (a one-time code, a double opt-in): preferences are
    # not consulted, nothing is looked up.
    fixed_kind: str = ""
    fixed_value: str = ""
    # False when the customer asked for this very message (a code, a double opt-in): it goes out
    # on ``requested_channel`` without consulting preferences.
    consult: bool = True
    # The language asked for (a code requested in Romanian); empty: preferences decide.
    language: str = ""


def missing_params(template: store.AnyRow, params: Mapping[str, str]) -> list[str]:
    return [p for p in template.params if p not in params]


def deliverable(unit: Unit, template: store.AnyRow) -> list[int]:
    """The template's channels that some configured provider serves."""
    served = unit.providers.channels()
    return [c for c in rules.channels_of(convert.contents_from_json(template.contents)) if c in served]


def _values(new: NewNotification, now: datetime) -> dict[str, object]:
    return {
        "id": new.notification_id,
        "customer": new.customer,
        "template_id": new.template.id,
        "topic": new.topic,
        "purpose": new.purpose,
        "params": dict(new.params),
        "requested_channel": new.requested_channel,
        "subject_resource": new.subject_resource,
        "expire_time": new.expire_time,
        "request_id": new.request_id,
        "by_channel": new.by.channel,
        "by_store": new.by.store,
        "by_device": new.by.device,
        "fixed_kind": new.fixed_kind,
        "fixed_value": new.fixed_value,
        "consult": new.consult,
        "language": new.language,
        "create_time": now,
        "update_time": now,
    }


def _planned(new: NewNotification, plan: plans.Plan | None, now: datetime, unit: Unit) -> dict[str, object]:
    """Row values for the first step of a new notification."""
    if not new.consult:
        return {"state": PENDING, "channels": [new.requested_channel], "due_time": now}
    if plan is None:  # preferences did not answer: the worker asks again shortly (a new question)
        return {
            "state": PENDING,
            "decide": True,
            "decisions": 1,
            "due_time": now + unit.config.retry.base_delay,
        }
    if isinstance(plan, plans.Send):
        return {
            "state": PENDING,
            "channels": list(plan.channels),
            "language": plan.language,
            "reserved_channel": plan.reserved_channel,
            "decisions": 1,
            "due_time": now,
        }
    if isinstance(plan, plans.Hold):
        return {
            "state": PENDING,
            "decide": True,
            "decisions": 1,
            "language": plan.language,
            "due_time": plan.until,
        }
    return {"state": SUPPRESSED, "suppression_reason": plan.reason, "decisions": 1, "due_time": None}


async def insert_new(
    unit: Unit,
    session: AsyncSession,
    new: NewNotification,
    plan: plans.Plan | None,
    *,
    decide_later: bool = False,
) -> store.AnyRow | None:
    """Write a new notification (None if that id exists: a redelivered event)."""
    now = unit.clock.now()
    values = _values(new, now)
    if decide_later and new.consult:
        values.update(state=PENDING, decide=True, due_time=now)
    else:
        values.update(_planned(new, plan, now, unit))
    row = (await session.execute(insert(N).values(**values).on_conflict_do_nothing().returning(*N.c))).first()
    if row is None:
        return None
    if row.state == SUPPRESSED:
        await unit.outbox.emit(session, events.suppressed(row, now))
    _count_after_commit(session, row, "accepted" if row.state == PENDING else "suppressed")
    if row.state == PENDING and row.due_time is not None and row.due_time > now:
        _count_after_commit(session, row, "held")
    if row.state == PENDING:
        after_commit(session, unit.wake)
    return row


def _count_after_commit(session: AsyncSession, row: store.AnyRow, state: str) -> None:
    channel, reason = row.chosen_channel, row.suppression_reason
    after_commit(session, lambda: metrics.count(state, channel, reason))


def check_params(template: store.AnyRow, params: Mapping[str, str]) -> None:
    missing = missing_params(template, params)
    if missing:
        raise InvalidArgument(
            [
                FieldViolation(
                    f"notification.params[{name}]",
                    f"the template uses {{{{{name}}}}}; give it a value",
                    "MISSING_PARAM",
                )
                for name in missing
            ],
            reason="MISSING_PARAMS",
            domain=DOMAIN,
        )


async def send(unit: Unit, request: svc.SendNotificationRequest) -> res.Notification:
    """SendNotification: validate against the template, ask preferences, then write the outcome.

    One transaction, opened by the request id's claim: a retry gets the stored answer without
    asking preferences again, and a concurrent duplicate waits for the first call instead of
    asking beside it. It stays open during DecideContact (one peer call, no row locks beyond the
    claim), which costs a pooled connection for that long and saves three round trips.
    """
    n = request.notification

    async def work(session: AsyncSession) -> res.Notification:
        template = await template_admin.load(session, n.template.removeprefix("templates/"))
        check_params(template, n.params)
        new = NewNotification(
            notification_id=derived_id(SEND_SCOPE, request.request_id),
            customer=n.customer,
            template=template,
            topic=n.topic or template.topic,
            purpose=n.purpose or template.purpose or pref.CONTACT_PURPOSE_MARKETING,
            params=dict(n.params),
            requested_channel=n.requested_channel,
            subject_resource=n.subject_resource,
            expire_time=n.expire_time.ToDatetime(tzinfo=UTC) if n.HasField("expire_time") else None,
            request_id=request.request_id,
            by=current_channel.get(),
        )
        row = await insert_new(unit, session, new, await decide_new(unit, new))
        if row is None:  # written before under this id (a replayed claim): answer with it
            row = (await session.execute(select(N).where(N.c.id == new.notification_id))).one()
        return convert.notification(row)

    return await once(unit.db, SEND_SCOPE, request.request_id, request, res.Notification, work)


async def decide_new(unit: Unit, new: NewNotification) -> plans.Plan | None:
    """The plan for a new notification; None when preferences could not be asked."""
    channels = deliverable(unit, new.template)
    if new.requested_channel and new.requested_channel not in channels:
        return plans.Suppress(
            res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT
            if new.requested_channel
            not in rules.channels_of(convert.contents_from_json(new.template.contents))
            else res.SUPPRESSION_REASON_CHANNEL_NOT_ALLOWED
        )
    if not channels:
        return plans.Suppress(res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT)
    now = unit.clock.now()
    try:
        decision = await unit.preferences.decide(
            new.customer,
            topic=new.topic,
            purpose=new.purpose,
            channel=new.requested_channel,
            eligible=channels,
            evaluate_time=now,
            request_id=decision_request_id(new.notification_id, 0),
        )
    except (PreferencesUnavailable, PreferencesRefused) as exc:
        log.warning("no decision from preferences yet for %s; the worker asks: %s", new.notification_id, exc)
        return None
    return plans.plan(
        decision,
        requested=new.requested_channel,
        deliverable=channels,
        now=now,
        expire_time=new.expire_time,
        limits=unit.config.limits,
    )


async def get(unit: Unit, notification_id: str, customer: str) -> res.Notification:
    async with unit.db.transaction() as session:
        row = (await session.execute(select(N).where(N.c.id == notification_id))).first()
        if row is None or (customer and row.customer != customer):
            raise NotFound(convert.notification_name(notification_id), domain=DOMAIN)
        attempts = (
            await session.execute(select(A).where(A.c.notification_id == notification_id).order_by(A.c.id))
        ).all()
    return convert.notification(row, attempts)


async def list_(unit: Unit, customer: str, query: ListQuery) -> svc.ListNotificationsResponse:
    statement = select(N)
    if customer:
        statement = statement.where(N.c.customer == customer)
    async with unit.db.transaction() as session:
        rows, token = await query.page(session, statement)
        ids = [r.id for r in rows]
        attempts: dict[str, list[store.AnyRow]] = {}
        if ids:
            for a in (
                await session.execute(select(A).where(A.c.notification_id.in_(ids)).order_by(A.c.id))
            ).all():
                attempts.setdefault(a.notification_id, []).append(a)
    return svc.ListNotificationsResponse(
        notifications=[convert.notification(r, attempts.get(r.id, ())) for r in rows], next_page_token=token
    )


async def suppress_pending(
    unit: Unit, session: AsyncSession, condition: ColumnElement[bool], reason: int, *, wipe: bool = False
) -> int:
    """Suppress every PENDING notification matching ``condition`` (with its event); how many."""
    now = unit.clock.now()
    values: dict[str, object] = {
        "state": SUPPRESSED,
        "suppression_reason": reason,
        "due_time": None,
        "lease_until": None,
        "update_time": now,
    }
    rows = (
        await session.execute(
            update(N).where(and_(N.c.state == PENDING, condition)).values(**values).returning(*N.c)
        )
    ).all()
    for row in rows:
        await unit.outbox.emit(session, events.suppressed(row, now))
        _count_after_commit(session, row, "suppressed")
    return len(rows)


async def needs_decision(session: AsyncSession, condition: ColumnElement[bool]) -> int:
    """Make PENDING notifications matching ``condition`` ask preferences again before sending."""
    result = await session.execute(
        update(N).where(and_(N.c.state == PENDING, N.c.consult, condition)).values(decide=True)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
