"""What the inventory service publishes, and the journal that writes movements with their events.

Every change of a stock level goes through ``MovementJournal``: the caller changes the level
with one statement, hands the returned row to ``record``, and calls ``flush`` before the
transaction commits. ``flush`` appends the movements, then emits through the outbox, in the
same transaction: one ``StockChangedEvent`` per movement, and the threshold events (low stock,
out of stock, back in stock) the movement crossed. Back-in-stock fires waiting subscriptions
once each, in one ordered pass at the end of the transaction (see ``store.fire_subscriptions``
for why that order cannot deadlock).

The inventory service consumes no events: reservations are made by callers (cart) over gRPC.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.inventory.v1 import events_pb2 as ev
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.context import ChannelInfo
from omni_runtime.db.engine import after_commit, defer_insert
from omni_runtime.events.outbox import Outbox
from omni_runtime.timestamps import to_proto
from services.inventory import convert, metrics, store
from services.inventory.domain.stock import Quantities, crossings, movement_kind_label


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a movement is for: the request id, actor and channel it is stamped with."""

    request_id: str = ""
    actor: str = ""
    channel: ChannelInfo = field(default_factory=ChannelInfo)


@dataclass
class _Recorded:
    values: dict[str, Any]
    before: Quantities
    after: Quantities
    version: int
    channel: ChannelInfo


@dataclass
class MovementJournal:
    """The movements of one transaction and the events they cause."""

    session: AsyncSession
    outbox: Outbox
    now: datetime
    request_id: str = ""
    actor: str = ""
    channel: ChannelInfo = field(default_factory=ChannelInfo)
    _moves: list[_Recorded] = field(default_factory=list)

    def record(
        self,
        level: Any,
        kind: int,
        on_hand_delta: int,
        reserved_delta: int,
        *,
        reason: str = "",
        reference: str = "",
        reservation_id: str | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """Note a movement that produced ``level`` (the row after the change); returns its row.

        ``caller``: who asked for this movement when one transaction serves several callers (a
        hot-row group); by default the journal's own request id, actor and channel."""
        who = caller or Caller(self.request_id, self.actor, self.channel)
        after = convert.quantities(level)
        before = after.moved(-on_hand_delta, -reserved_delta)
        values = {
            "id": uuid.uuid4().hex,
            "location_id": level.location_id,
            "item_sku": level.item_sku,
            "kind": kind,
            "on_hand_delta": on_hand_delta,
            "reserved_delta": reserved_delta,
            "on_hand_after": after.on_hand,
            "reserved_after": after.reserved,
            "reason": reason,
            "request_id": who.request_id,
            "reservation_id": reservation_id,
            "reference": reference,
            "channel": who.channel.channel,
            "channel_store": who.channel.store,
            "channel_device": who.channel.device,
            "actor": who.actor,
            "create_time": self.now,
        }
        self._moves.append(_Recorded(values, before, after, level.version, who.channel))
        return values

    async def flush(self, extra: Sequence[Message] = ()) -> None:
        """Append the movements and emit their events (call once, before commit). They are
        written with the transaction's last statement, whatever their number; only stock coming
        back costs statements of its own (the subscriptions it fires)."""
        moves, self._moves = self._moves, []
        events: list[Message] = list(extra)  # the caller's own events, first
        back: list[tuple[str, str, int]] = []
        when = to_proto(self.now)
        for move in moves:
            events.append(self._change(move))
            crossed = crossings(move.before, move.after)
            loc, sku = move.values["location_id"], move.values["item_sku"]
            level, item, place = (
                convert.level_name(loc, sku),
                convert.item_name(sku),
                convert.location_name(loc),
            )
            if crossed.low_stock:
                events.append(
                    ev.LowStockEvent(
                        stock_level=level,
                        item=item,
                        location=place,
                        occur_time=when,
                        available=move.after.available,
                        low_stock_threshold=move.after.low_stock_threshold,
                        on_hand=move.after.on_hand,
                    )
                )
            if crossed.out_of_stock:
                events.append(
                    ev.OutOfStockEvent(
                        stock_level=level,
                        item=item,
                        location=place,
                        occur_time=when,
                        on_hand=move.after.on_hand,
                        reserved=move.after.reserved,
                        oversold=move.after.oversold,
                    )
                )
            if crossed.back_in_stock:
                back.append((loc, sku, move.after.available))
        if back:
            events += await self._back_in_stock(back)
        # Written with the transaction's last statement (with the events and the stored answer).
        defer_insert(self.session, store.stock_movements, [m.values for m in moves])
        await self.outbox.emit_many(self.session, events)
        kinds = Counter(movement_kind_label(m.values["kind"]) for m in moves)
        after_commit(self.session, lambda: _count_movements(kinds))

    def _change(self, move: _Recorded) -> ev.StockChangedEvent:
        v = move.values
        return ev.StockChangedEvent(
            stock_level=convert.level_name(v["location_id"], v["item_sku"]),
            item=convert.item_name(v["item_sku"]),
            location=convert.location_name(v["location_id"]),
            movement=convert.movement_name(v["location_id"], v["item_sku"], v["id"]),
            kind=v["kind"],
            old_on_hand=move.before.on_hand,
            new_on_hand=move.after.on_hand,
            old_reserved=move.before.reserved,
            new_reserved=move.after.reserved,
            old_available=move.before.available,
            new_available=move.after.available,
            status=move.after.status,
            reservation=convert.reservation_name(v["reservation_id"]) if v["reservation_id"] else "",
            channel=move.channel.to_proto(),
            etag=convert.etag(move.version),
            occur_time=to_proto(self.now),
        )

    async def _back_in_stock(self, back: list[tuple[str, str, int]]) -> list[Message]:
        """Fire the subscriptions the levels coming back satisfy; their events and the
        back-in-stock events, in that order."""
        events: list[Message] = []
        fired = await store.fire_subscriptions(self.session, [(loc, sku) for loc, sku, _ in back], self.now)
        per_pair = Counter((row.fired_location, row.item_sku) for row in fired)
        available = {(loc, sku): qty for loc, sku, qty in back}
        if fired:
            items, places = store.items, store.locations
            titles = {
                r.sku: r.title
                for r in await self.session.execute(
                    select(items.c.sku, items.c.title).where(items.c.sku.in_({r.item_sku for r in fired}))
                )
            }
            names = {
                r.id: r.display_name
                for r in await self.session.execute(
                    select(places.c.id, places.c.display_name).where(
                        places.c.id.in_({r.fired_location for r in fired})
                    )
                )
            }
            for row in fired:
                events.append(
                    ev.StockSubscriptionFiredEvent(
                        stock_subscription=convert.subscription_name(row.id),
                        customer=row.customer,
                        item=convert.item_name(row.item_sku),
                        item_title=titles.get(row.item_sku, ""),
                        location=convert.location_name(row.fired_location),
                        location_display_name=names.get(row.fired_location, ""),
                        available=available.get((row.fired_location, row.item_sku), 0),
                        subscribed_channel=convert.channel(row),
                        occur_time=to_proto(self.now),
                    )
                )
        for loc, sku, qty in back:
            events.append(
                ev.BackInStockEvent(
                    stock_level=convert.level_name(loc, sku),
                    item=convert.item_name(sku),
                    location=convert.location_name(loc),
                    available=qty,
                    fired_subscription_count=per_pair.get((loc, sku), 0),
                    occur_time=to_proto(self.now),
                )
            )
        return events


def _count_movements(kinds: Counter[str]) -> None:
    """After a commit: count the movements it made in ``omni_inventory_stock_movements_total``."""
    for kind, n in kinds.items():
        metrics.STOCK_MOVEMENTS.labels(kind).inc(n)


_LIFECYCLE: dict[str, Any] = {
    "created": ev.ReservationCreatedEvent,
    "committed": ev.ReservationCommittedEvent,
    "released": ev.ReservationReleasedEvent,
    "expired": ev.ReservationExpiredEvent,
}


def reservation_message(state_event: str, reservation: res.Reservation, now: datetime) -> Message:
    """The lifecycle event of a reservation (created, committed, released, expired)."""
    message: Message = _LIFECYCLE[state_event](reservation=reservation, occur_time=to_proto(now))
    return message


async def reservation_event(
    session: AsyncSession, outbox: Outbox, state_event: str, reservation: res.Reservation, now: datetime
) -> None:
    """Emit the lifecycle event of a reservation (created, committed, released, expired)."""
    await outbox.emit(session, reservation_message(state_event, reservation, now))
