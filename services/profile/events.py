"""What the profile service consumes: every service's events become timeline interactions,
identity's also contact points, guest merges and erasures, and every service's erasure receipt
is filed against the customer's erasure.

One durable batch consumer per producer stream (``consume_batches``): a fetch's new events are
applied in one transaction. Events that only add interactions are gathered and recorded with
one ``Timeline.apply``; events with other effects (a guest merge, an erasure, a contact point)
are applied in order, after the interactions gathered before them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession

from omni.cart.v1 import events_pb2 as cart_ev
from omni.cart.v1 import resources_pb2 as cart_r
from omni.identity.v1 import events_pb2 as id_ev
from omni.identity.v1 import resources_pb2 as id_r
from omni.inventory.v1 import events_pb2 as inv_ev
from omni.messaging.v1 import events_pb2 as msg_ev
from omni.messaging.v1 import resources_pb2 as msg_r
from omni.preferences.v1 import events_pb2 as pref_ev
from omni.preferences.v1 import resources_pb2 as pref_r
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from omni_runtime import names
from omni_runtime.events.consumer import Event
from omni_runtime.timestamps import utcnow
from services.profile.timeline import NewInteraction, PurchaseChange, Timeline

log = logging.getLogger("omni.profile.events")
IT = r.Interaction
KIND_OF_IDENTIFIER = {
    id_r.IDENTIFIER_KIND_EMAIL: r.ContactPoint.KIND_EMAIL,
    id_r.IDENTIFIER_KIND_PHONE: r.ContactPoint.KIND_PHONE,
    id_r.IDENTIFIER_KIND_FACEBOOK: r.ContactPoint.KIND_FACEBOOK,
    id_r.IDENTIFIER_KIND_WHATSAPP: r.ContactPoint.KIND_WHATSAPP,
    id_r.IDENTIFIER_KIND_INSTAGRAM: r.ContactPoint.KIND_INSTAGRAM,
}


def _when(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else utcnow()


def _customer(name: str) -> str:
    found = names.parse("customers/{customer}", names.customer_of(name) or "")
    return found["customer"] if found else ""


def _touch(
    event: Event,
    customer_name: str,
    type_: int,
    when: Timestamp,
    channel: channel_pb2.ChannelContext | None = None,
    *,
    subject: str = "",
    summary: str = "",
    attributes: dict[str, str] | None = None,
    staff: str = "",
    by: str = "",
) -> NewInteraction | None:
    customer = _customer(customer_name)
    if not customer:
        return None
    ctx = channel or channel_pb2.ChannelContext()
    return NewInteraction(
        customer=customer,
        type=type_,
        occur_time=_when(when),
        channel=ctx.channel,
        store=ctx.store,
        device=ctx.device,
        subject=subject,
        summary=summary[:500],
        attributes={k: v for k, v in (attributes or {}).items() if v},
        staff_member=staff if staff.startswith("staffMembers/") else "",
        recorded_by=by or event.subject.split(".")[1],
        source=event.subject.removeprefix("omni."),
    )


@dataclass
class Effects:
    """What one event does: interactions and purchase facts to record, and/or other work."""

    touches: list[NewInteraction] = field(default_factory=list)
    purchases: list[PurchaseChange] = field(default_factory=list)
    work: Callable[[AsyncSession], Awaitable[None]] | None = None


def _money(order: cart_r.Order) -> tuple[str, int]:
    return order.total.currency_code or order.currency_code, order.total.minor_units


# --- mapping of each subject -------------------------------------------------------------


def cart_effects(event: Event) -> Effects:
    out = Effects()
    e: Any
    kind = event.event_type.rsplit(".", 1)[-1]
    if kind == "CartUpdatedEvent":
        e = event.decode(cart_ev.CartUpdatedEvent)
        if e.kind in (
            cart_r.CART_CHANGE_KIND_CHECKED_OUT,
            cart_r.CART_CHANGE_KIND_REPRICED,
            cart_r.CART_CHANGE_KIND_SNAPSHOT,
        ):
            return out  # the order placed is its own interaction; re-pricing is not the customer's doing
        change = cart_r.CartChangeKind.Name(e.kind).removeprefix("CART_CHANGE_KIND_").lower()
        touch = _touch(
            event,
            e.cart,
            IT.TYPE_CART_UPDATED,
            e.occur_time,
            e.channel,
            subject=e.cart,
            summary=f"Cart {change.replace('_', ' ')}",
            attributes={"change": change, "lines": ",".join(e.line_ids)},
            staff=e.actor,
            by=e.actor,
        )
        out.touches += [touch] if touch else []
    elif kind == "OrderPlacedEvent":
        e = event.decode(cart_ev.OrderPlacedEvent)
        currency, total = _money(e.order)
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_ORDER_PLACED,
            e.occur_time,
            e.order.channel,
            subject=e.order.name,
            summary=f"Placed order {e.order.order_number}",
            attributes={
                "currency_code": currency,
                "total_minor_units": str(total),
                "order_number": e.order.order_number,
            },
            staff=e.placed_by,
            by=e.placed_by,
        )
        if touch:
            out.touches.append(touch)
            out.purchases.append(
                PurchaseChange(
                    e.order.name, touch.customer, currency, total, e.order.channel.channel, touch.occur_time
                )
            )
    elif kind == "OrderCancelledEvent":
        e = event.decode(cart_ev.OrderCancelledEvent)
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_OTHER,
            e.occur_time,
            e.order.channel,
            subject=e.order.name,
            summary=f"Order {e.order.order_number} cancelled"
            + (" (not collected in time)" if e.automatic else ""),
            attributes={"event": "order_cancelled", "reason": e.reason[:200]},
            staff=e.cancelled_by,
            by=e.cancelled_by,
        )
        if touch:
            out.touches.append(touch)
            out.purchases.append(PurchaseChange(e.order.name, touch.customer, cancelled=True))
    elif kind == "OrderReadyForPickupEvent":
        e = event.decode(cart_ev.OrderReadyForPickupEvent)
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_OTHER,
            e.occur_time,
            channel_pb2.ChannelContext(store=e.pickup_store),
            subject=e.order.name,
            summary=f"Order {e.order.order_number} ready for pickup at {e.pickup_store_display_name}",
            attributes={"event": "order_ready_for_pickup"},
            staff=e.marked_by,
        )
        out.touches += [touch] if touch else []
    elif kind == "OrderCollectedEvent":
        e = event.decode(cart_ev.OrderCollectedEvent)
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_ORDER_PICKED_UP,
            e.occur_time,
            e.channel,
            subject=e.order.name,
            summary=f"Collected order {e.order.order_number}",
            staff=e.collected_by,
        )
        out.touches += [touch] if touch else []
    elif kind == "OrderShippedEvent":
        e = event.decode(cart_ev.OrderShippedEvent)
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_OTHER,
            e.occur_time,
            subject=e.order.name,
            summary=f"Order {e.order.order_number} shipped",
            attributes={"event": "order_shipped", "tracking_reference": e.tracking_reference},
        )
        out.touches += [touch] if touch else []
    elif kind == "CartAbandonedEvent":
        e = event.decode(cart_ev.CartAbandonedEvent)
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_OTHER,
            e.occur_time,
            e.last_channel,
            subject=e.cart,
            summary="Left a cart without checking out",
            attributes={"event": "cart_abandoned"},
        )
        out.touches += [touch] if touch else []
    return out


def inventory_effects(event: Event) -> Effects:
    out = Effects()
    e: Any
    kind = event.event_type.rsplit(".", 1)[-1]
    if kind == "ReservationCreatedEvent":
        e = event.decode(inv_ev.ReservationCreatedEvent)
        if e.reservation.owner.endswith("/cart") or "/orders/" in e.reservation.owner:
            return out  # checkout's own reservations: the order is the interaction
        touch = _touch(
            event,
            e.reservation.owner,
            IT.TYPE_RESERVATION_CREATED,
            e.occur_time,
            subject=e.reservation.name,
            summary="Reserved stock" + (" for pickup" if e.reservation.pickup else ""),
        )
        out.touches += [touch] if touch else []
    elif kind == "StockSubscriptionFiredEvent":
        e = event.decode(inv_ev.StockSubscriptionFiredEvent)
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_OTHER,
            e.occur_time,
            e.subscribed_channel,
            subject=e.item,
            summary=f"{e.item_title} is back in stock at {e.location_display_name}",
            attributes={"event": "back_in_stock", "stock_subscription": e.stock_subscription},
        )
        out.touches += [touch] if touch else []
    return out


def messaging_effects(event: Event) -> Effects:
    out = Effects()
    kind = event.event_type.rsplit(".", 1)[-1]
    touch: NewInteraction | None = None
    if kind == "NotificationSentEvent":
        e = event.decode(msg_ev.NotificationSentEvent)
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_MESSAGE_SENT,
            e.occur_time,
            channel_pb2.ChannelContext(channel=e.channel),
            subject=e.notification,
            summary=f"Sent {e.template.removeprefix('templates/')}",
            attributes={"topic": e.topic, "about": e.subject_resource},
        )
    elif kind == "NotificationFailedEvent":
        e2 = event.decode(msg_ev.NotificationFailedEvent)
        touch = _touch(
            event,
            e2.customer,
            IT.TYPE_OTHER,
            e2.occur_time,
            subject=e2.notification,
            summary=f"Could not deliver {e2.template.removeprefix('templates/')}",
            attributes={"event": "notification_failed", "topic": e2.topic},
        )
    elif kind == "MessagePostedEvent":
        e3 = event.decode(msg_ev.MessagePostedEvent)
        inbound = e3.message.direction == msg_r.MESSAGE_DIRECTION_INBOUND
        touch = _touch(
            event,
            e3.customer,
            IT.TYPE_MESSAGE_RECEIVED if inbound else IT.TYPE_MESSAGE_SENT,
            e3.occur_time,
            e3.message.channel,
            subject=e3.message.name,
            summary=("Wrote: " if inbound else "Agent wrote: ") + e3.message.text[:200],
            attributes={"conversation": e3.conversation},
            staff=e3.message.author,
        )
    elif kind == "ConversationResolvedEvent":
        e4 = event.decode(msg_ev.ConversationResolvedEvent)
        last = e4.channels[-1] if e4.channels else 0
        touch = _touch(
            event,
            e4.customer,
            IT.TYPE_SUPPORT_CONTACT,
            e4.occur_time,
            channel_pb2.ChannelContext(channel=last),  # type: ignore[arg-type]
            subject=e4.conversation,
            summary=f"Conversation resolved ({e4.intent or 'no intent'})",
            attributes={"intent": e4.intent, "sla_breached": "true" if e4.sla_breached else ""},
        )
    out.touches += [touch] if touch else []
    return out


def preferences_effects(event: Event) -> Effects:
    out = Effects()
    if event.event_type.endswith("ConsentChangedEvent"):
        e = event.decode(pref_ev.ConsentChangedEvent)
        state = pref_r.ConsentState.Name(e.state).removeprefix("CONSENT_STATE_").lower()
        channel = channel_pb2.Channel.Name(e.channel).removeprefix("CHANNEL_").lower()
        touch = _touch(
            event,
            e.customer,
            IT.TYPE_OTHER,
            e.occur_time,
            e.source.channel,
            subject=e.consent,
            summary=f"Consent for {channel} / {e.topic}: {state}",
            attributes={"event": "consent_changed", "state": state, "topic": e.topic},
        )
        out.touches += [touch] if touch else []
    return out


class Consumers:
    """The batch handlers, one per producer; ``identity_work`` and ``receipt`` are injected so
    this module stays a mapping (the use cases live in their own modules)."""

    def __init__(
        self,
        timeline: Timeline,
        identity_work: Callable[[Event], Callable[[AsyncSession], Awaitable[None]] | None],
        receipt: Callable[[Event], Callable[[AsyncSession], Awaitable[None]] | None],
    ) -> None:
        self.timeline = timeline
        self.identity_work = identity_work
        self.receipt = receipt

    def identity_effects(self, event: Event) -> Effects:
        out = Effects(work=self.identity_work(event))
        kind = event.event_type.rsplit(".", 1)[-1]
        if kind == "CustomerRegisteredEvent":
            e = event.decode(id_ev.CustomerRegisteredEvent)
            touch = _touch(
                event, e.customer, IT.TYPE_REGISTERED, e.occur_time, e.channel, summary="Registered"
            )
            out.touches += [touch] if touch else []
        elif kind == "SessionStartedEvent":
            e2 = event.decode(id_ev.SessionStartedEvent)
            method = id_r.AuthMethod.Name(e2.auth_method).removeprefix("AUTH_METHOD_").lower()
            if e2.principal.startswith("customers/") and not e2.guest:
                touch = _touch(
                    event,
                    e2.principal,
                    IT.TYPE_LOGIN,
                    e2.occur_time,
                    e2.channel,
                    subject=e2.session,
                    summary=f"Logged in ({method.replace('_', ' ')})",
                    attributes={"auth_method": method},
                )
                out.touches += [touch] if touch else []
        return out

    def handler(
        self, mapping: Callable[[Event], Effects]
    ) -> Callable[[AsyncSession, list[Event]], Awaitable[None]]:
        async def handle(session: AsyncSession, events: list[Event]) -> None:
            touches: list[NewInteraction] = []
            purchases: list[PurchaseChange] = []
            for event in events:
                effects = mapping(event)
                work = effects.work or self.receipt(event)
                if work is not None:
                    if touches or purchases:
                        await self.timeline.apply(session, touches, purchases)
                        touches, purchases = [], []
                    await work(session)
                touches += effects.touches
                purchases += effects.purchases
            if touches or purchases:
                await self.timeline.apply(session, touches, purchases)

        return handle


SUBJECTS: dict[str, list[str]] = {
    "identity": [
        "omni.identity.customer_registered",
        "omni.identity.identifier_linked",
        "omni.identity.identifier_unlinked",
        "omni.identity.guest_upgraded",
        "omni.identity.session_started",
        "omni.identity.customer_erased",
    ],
    "cart": [
        "omni.cart.cart_updated",
        "omni.cart.cart_abandoned",
        "omni.cart.order_placed",
        "omni.cart.order_cancelled",
        "omni.cart.order_ready_for_pickup",
        "omni.cart.order_collected",
        "omni.cart.order_shipped",
        "omni.cart.customer_erasure_processed",
    ],
    "inventory": [
        "omni.inventory.reservation_created",
        "omni.inventory.stock_subscription_fired",
        "omni.inventory.customer_erasure_processed",
    ],
    "messaging": [
        "omni.messaging.notification_sent",
        "omni.messaging.notification_failed",
        "omni.messaging.message_posted",
        "omni.messaging.conversation_resolved",
        "omni.messaging.customer_erasure_processed",
    ],
    "preferences": ["omni.preferences.consent_changed", "omni.preferences.customer_erasure_processed"],
}


def mappings(consumers: Consumers) -> dict[str, Callable[[Event], Effects]]:
    return {
        "identity": consumers.identity_effects,
        "cart": cart_effects,
        "inventory": inventory_effects,
        "messaging": messaging_effects,
        "preferences": preferences_effects,
    }
