"""The platform's own notifications, driven by other services' events.

Each handler runs in the consumer's transaction (the event id is recorded with it, so a
redelivery is skipped) and only enqueues: the notification id is derived from the event id, so
even a replay after the inbox was purged finds the row it wrote. The delivery worker then asks
preferences and sends, exactly as for SendNotification.

- identity ``one_time_code_issued`` → ``one-time-code`` to the given e-mail or phone, without
  consulting preferences (the person asked for it), dropped once the code has expired;
- cart ``order_placed`` / ``order_ready_for_pickup`` / ``order_shipped`` / ``order_cancelled``
  → the order templates (TRANSACTIONAL, topic ``order_updates``);
- inventory ``stock_subscription_fired`` → ``back-in-stock``;
- preferences ``consent_confirmation_requested`` → ``consent-confirmation`` on the consent's
  channel (to the unverified address it names), without consulting consent;
- preferences ``consent_changed`` to DENIED/WITHDRAWN → waiting notifications of that customer
  and topic ask preferences again before they go out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.cart.v1 import events_pb2 as cart_events
from omni.identity.v1 import events_pb2 as identity_events
from omni.identity.v1 import resources_pb2 as idr
from omni.inventory.v1 import events_pb2 as inventory_events
from omni.preferences.v1 import events_pb2 as pref_events
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import channel_pb2, money_pb2
from omni_runtime.context import ChannelInfo
from omni_runtime.events.consumer import Event
from services.messaging import defaults, notifications, store
from services.messaging.domain.contacts import EMAIL, PHONE
from services.messaging.unit import Unit

log = logging.getLogger("omni.messaging.reactions")

ONE_TIME_CODE_ISSUED = "omni.identity.one_time_code_issued"
ORDER_PLACED = "omni.cart.order_placed"
ORDER_READY = "omni.cart.order_ready_for_pickup"
ORDER_SHIPPED = "omni.cart.order_shipped"
ORDER_CANCELLED = "omni.cart.order_cancelled"
SUBSCRIPTION_FIRED = "omni.inventory.stock_subscription_fired"
CONFIRMATION_REQUESTED = "omni.preferences.consent_confirmation_requested"
CONSENT_CHANGED = "omni.preferences.consent_changed"
ORDER_TOPIC = "order_updates"
NO_CHANNEL = ChannelInfo()


def money(value: money_pb2.Money) -> str:
    """``12.34 EUR`` (two minor digits: every currency the platform sells in today)."""
    sign = "-" if value.minor_units < 0 else ""
    units, cents = divmod(abs(value.minor_units), 100)
    return f"{sign}{units}.{cents:02d} {value.currency_code}".strip()


def _time(stamp: object) -> datetime | None:
    if stamp is None or not stamp.ByteSize():  # type: ignore[attr-defined]
        return None
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined,no-any-return]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


class Reactions:
    def __init__(self, unit: Unit) -> None:
        self.unit = unit

    async def _enqueue(
        self,
        session: AsyncSession,
        event: Event,
        template_id: str,
        *,
        customer: str,
        params: Mapping[str, str],
        topic: str = "",
        purpose: int = pref.CONTACT_PURPOSE_TRANSACTIONAL,
        subject_resource: str = "",
        expire_time: datetime | None = None,
        channel: int = 0,
        fixed: tuple[str, str] = ("", ""),
        consult: bool = True,
        by: ChannelInfo = NO_CHANNEL,
        language: str = "",
    ) -> None:
        template = (
            await session.execute(select(store.templates).where(store.templates.c.id == template_id))
        ).first()
        if template is None:
            log.error(
                "template %s is missing; event %s (%s) notifies nobody", template_id, event.id, event.subject
            )
            return
        new = notifications.NewNotification(
            notification_id=notifications.derived_id("event", event.id),
            customer=customer,
            template=template,
            topic=topic or template.topic,
            purpose=purpose,
            params={k: v for k, v in params.items() if v or k in template.params},
            requested_channel=channel,
            subject_resource=subject_resource,
            expire_time=expire_time,
            by=by,
            fixed_kind=fixed[0],
            fixed_value=fixed[1],
            consult=consult,
            language=language,
        )
        missing = notifications.missing_params(template, new.params)
        if missing:
            log.error(
                "template %s needs %s that event %s does not carry; not sent", template_id, missing, event.id
            )
            return
        await notifications.insert_new(self.unit, session, new, None, decide_later=True)

    async def on_one_time_code(self, session: AsyncSession, event: Event) -> None:
        issued = event.decode(identity_events.OneTimeCodeIssuedEvent)
        kind = {idr.IDENTIFIER_KIND_EMAIL: EMAIL, idr.IDENTIFIER_KIND_PHONE: PHONE}.get(
            issued.destination.kind
        )
        if kind is None or not issued.destination.value:
            log.warning("one-time code %s has no e-mail or phone destination; not sent", event.id)
            return
        expire, issued_at = _time(issued.expire_time), _time(issued.occur_time)
        minutes = max(1, round((expire - issued_at).total_seconds() / 60)) if expire and issued_at else 10
        channel = channel_pb2.CHANNEL_EMAIL if kind == EMAIL else channel_pb2.CHANNEL_SMS
        await self._enqueue(
            session,
            event,
            defaults.ONE_TIME_CODE,
            customer=issued.customer,
            params={"code": issued.code, "expire_minutes": str(minutes)},
            purpose=pref.CONTACT_PURPOSE_URGENT,
            expire_time=expire,
            channel=channel,
            fixed=(kind, issued.destination.value),
            consult=False,
            by=ChannelInfo(issued.channel.channel, issued.channel.store, issued.channel.device),
            language=issued.language_code,
        )

    async def on_order_placed(self, session: AsyncSession, event: Event) -> None:
        placed = event.decode(cart_events.OrderPlacedEvent)
        order = placed.order
        await self._enqueue(
            session,
            event,
            defaults.ORDER_CONFIRMATION,
            customer=placed.customer,
            params={
                "order_number": order.order_number,
                "total": money(order.total),
                "item_count": str(sum(line.quantity for line in order.lines)),
            },
            topic=ORDER_TOPIC,
            subject_resource=order.name,
        )

    async def on_order_ready(self, session: AsyncSession, event: Event) -> None:
        ready = event.decode(cart_events.OrderReadyForPickupEvent)
        await self._enqueue(
            session,
            event,
            defaults.ORDER_READY,
            customer=ready.customer,
            params={
                "order_number": ready.order.order_number,
                "store_name": ready.pickup_store_display_name or ready.pickup_store,
                "pickup_deadline": _when(_time(ready.pickup_deadline)),
            },
            topic=ORDER_TOPIC,
            subject_resource=ready.order.name,
        )

    async def on_order_shipped(self, session: AsyncSession, event: Event) -> None:
        shipped = event.decode(cart_events.OrderShippedEvent)
        await self._enqueue(
            session,
            event,
            defaults.ORDER_SHIPPED,
            customer=shipped.customer,
            params={
                "order_number": shipped.order.order_number,
                "tracking_reference": shipped.tracking_reference or "-",
            },
            topic=ORDER_TOPIC,
            subject_resource=shipped.order.name,
        )

    async def on_order_cancelled(self, session: AsyncSession, event: Event) -> None:
        cancelled = event.decode(cart_events.OrderCancelledEvent)
        reason = cancelled.reason or (
            "not collected in time" if cancelled.automatic else "cancelled on request"
        )
        await self._enqueue(
            session,
            event,
            defaults.ORDER_CANCELLED,
            customer=cancelled.customer,
            params={"order_number": cancelled.order.order_number, "reason": reason},
            topic=ORDER_TOPIC,
            subject_resource=cancelled.order.name,
        )

    async def on_subscription_fired(self, session: AsyncSession, event: Event) -> None:
        fired = event.decode(inventory_events.StockSubscriptionFiredEvent)
        await self._enqueue(
            session,
            event,
            defaults.BACK_IN_STOCK,
            customer=fired.customer,
            params={
                "item_title": fired.item_title or fired.item,
                "location_name": fired.location_display_name or fired.location or "our stores",
            },
            subject_resource=fired.item,
        )

    async def on_confirmation_requested(self, session: AsyncSession, event: Event) -> None:
        requested = event.decode(pref_events.ConsentConfirmationRequestedEvent)
        kinds = {channel_pb2.CHANNEL_EMAIL: EMAIL, channel_pb2.CHANNEL_SMS: PHONE}
        kind = kinds.get(requested.channel)
        if kind is None:
            log.warning(
                "consent confirmation %s on %s: channel cannot carry a link; not sent",
                event.id,
                requested.channel,
            )
            return
        expire = _time(requested.expire_time)
        link = self.unit.config.consent_confirm_url.replace("{token}", requested.token)
        await self._enqueue(
            session,
            event,
            defaults.CONSENT_CONFIRMATION,
            customer=requested.customer,
            params={
                "confirm_url": link,
                "topic": "all" if requested.topic == "*" else requested.topic.replace("_", " "),
                "expire_time": _when(expire),
            },
            purpose=pref.CONTACT_PURPOSE_URGENT,
            subject_resource=requested.consent,
            expire_time=expire,
            channel=requested.channel,
            fixed=(kind, requested.destination) if requested.destination else ("", ""),
            consult=False,
            by=ChannelInfo(
                requested.channel_context.channel,
                requested.channel_context.store,
                requested.channel_context.device,
            ),
            language=requested.language_code,
        )

    async def on_consent_changed(self, session: AsyncSession, event: Event) -> None:
        changed = event.decode(pref_events.ConsentChangedEvent)
        if changed.state not in (pref.CONSENT_STATE_DENIED, pref.CONSENT_STATE_WITHDRAWN):
            return
        n = store.notifications
        condition = n.c.customer == changed.customer
        if changed.topic != "*":
            condition = and_(condition, n.c.topic == changed.topic)
        await notifications.needs_decision(session, condition)
