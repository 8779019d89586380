"""Order use cases: read, list, cancel, and the pickup / shipping lifecycle.

Every change locks the order row, calls the inventory for the group's reservation (release,
extend, commit: all idempotent on the inventory's side, so a retry after a lost answer is
safe), updates the order document, derives its state from its groups and emits the event, in
one transaction. Store associates act only on orders picked up at their own store.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeAlias, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import events_pb2 as ev
from omni.cart.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from omni_runtime import names
from omni_runtime.auth.permissions import Scope, current_scope, require_store
from omni_runtime.context import current_channel, current_principal
from omni_runtime.db.idempotency import once
from omni_runtime.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from omni_runtime.listing import Field, Kind, Listing, ListQuery
from omni_runtime.server import Runtime
from omni_runtime.timestamps import to_proto as ts
from services.cart import store
from services.cart.config import CartConfig
from services.cart.convert import from_ts, money
from services.cart.domain import orders as rules
from services.cart.inventory_client import InventoryClient, ReservationRefused

DOMAIN = "omni.cart"
ORDER_PATTERN = "customers/{customer}/orders/{order}"
NAMESPACE = uuid.UUID("0b6f6c3e-8d0c-4d3e-9a57-4c8f3f1f2b90")
T = TypeVar("T")
# Contract: a pickup is held at most 14 days after the order was placed.
MAX_PICKUP = timedelta(days=14)

# The requests of order changes: each carries the etag it expects and its AIP-155 request id.
ChangeRequest: TypeAlias = (
    svc.CancelOrderRequest
    | svc.MarkOrderReadyForPickupRequest
    | svc.CollectOrderRequest
    | svc.MarkOrderShippedRequest
)
# An event to emit, built from the order after the change.
EventFactory = Callable[[r.Order], Message]
Change = Callable[[r.Order, AsyncSession, datetime], Awaitable[list[EventFactory] | None]]

_O = store.orders.c
ORDERS = Listing(
    fields={
        "state": Field(Kind.ENUM, r.OrderState, sql=_O.state),
        "pickup_stores": Field(Kind.STRING, repeated=True, sql=_O.pickup_stores),
        "order_number": Field(Kind.STRING, sql=_O.order_number),
        "channel.channel": Field(Kind.ENUM, channel_pb2.Channel, sql=_O.channel),
        "channel.store": Field(Kind.STRING, sql=_O.channel_store),
        "create_time": Field(Kind.TIMESTAMP, sql=_O.create_time),
        "fulfillment_groups.state": Field(
            Kind.ENUM, r.FulfillmentGroupState, repeated=True, sql=_O.group_states
        ),
    },
    order_by={"create_time": _O.create_time, "update_time": _O.update_time},
    default_order="create_time desc",
    tiebreak=[_O.id],
    domain=DOMAIN,
)


def _step_id(order: r.Order, what: str) -> str:
    """Request id of an inventory call made for a step of an order (retries reuse it)."""
    return str(uuid.uuid5(NAMESPACE, f"{order.name}/{order.etag}/{what}"))


def _refused(order: r.Order, refusal: ReservationRefused) -> FailedPrecondition:
    return FailedPrecondition(
        f"the inventory refused: {refusal.message}",
        reason=refusal.reason or "RESERVATION_NOT_ACTIVE",
        domain=DOMAIN,
        metadata={"resource": order.name, **refusal.metadata},
    )


async def _refusals_of(order: r.Order, call: Awaitable[T]) -> T:
    """The answer of an inventory call made for ``order``; a refusal becomes FAILED_PRECONDITION."""
    try:
        return await call
    except ReservationRefused as refusal:
        raise _refused(order, refusal) from refusal


class OrderOps:
    def __init__(self, runtime: Runtime, config: CartConfig, inventory: InventoryClient) -> None:
        assert runtime.db is not None and runtime.outbox is not None
        self.db = runtime.db
        self.outbox = runtime.outbox
        self.config = config
        self.inventory = inventory

    # ---------------------------------------------------------------------------------------
    # Access
    # ---------------------------------------------------------------------------------------

    @staticmethod
    def authorize(order: r.Order, store_name: str = "") -> None:
        """A store associate may act only on orders picked up at their own store."""
        if current_scope.get() is not Scope.STORE:
            return
        if store_name:
            require_store(store_name)
            return
        mine = current_principal.get().store
        stores = rules.pickup_stores(order)
        require_store(mine if mine and mine in stores else (stores[0] if stores else order.name))

    async def get(self, customer: str, order_id: str) -> r.Order:
        async with self.db.read() as session:
            order = await store.load_order(session, customer, order_id)
        name = names.build(ORDER_PATTERN, customer=customer, order=order_id)
        if order is None:
            raise NotFound(name, domain=DOMAIN)
        self.authorize(order)
        return order

    async def list(self, customer: str | None, query: ListQuery) -> tuple[builtins.list[r.Order], str, int]:
        """One page of orders (of ``customer``, or of everyone); a store associate's only of their store."""
        conditions = [] if customer is None else [_O.customer == customer]
        if current_scope.get() is Scope.STORE:
            conditions.append(_O.pickup_stores.contains([current_principal.get().store]))
        async with self.db.read() as session:
            return await store.list_orders(session, query, conditions, customer=customer)

    # ---------------------------------------------------------------------------------------
    # The change pipeline
    # ---------------------------------------------------------------------------------------

    async def mutate(
        self, method: str, request: ChangeRequest, *, customer: str, order_id: str, change: Change
    ) -> r.Order:
        """Run one order change: AIP-155 replay, lock, etag check, ``change``, state, events."""
        etag, request_id = request.etag, request.request_id
        name = names.build(ORDER_PATTERN, customer=customer, order=order_id)
        scope = f"{method}:{name}"

        async def work(session: AsyncSession) -> r.Order:
            order = await store.load_order(session, customer, order_id, lock=True)
            if order is None:
                raise NotFound(name, domain=DOMAIN)
            if etag and etag != order.etag:
                self.authorize(order)
                raise Aborted(
                    f"{name} changed since etag {etag!r}; re-read it and retry",
                    current_etag=order.etag,
                    domain=DOMAIN,
                    metadata={"resource": name},
                )
            now = datetime.now(UTC)
            factories = await change(order, session, now)
            if factories is not None:
                order.etag = str(int(order.etag or 0) + 1)
                order.update_time.CopyFrom(ts(now))
                order.state = rules.derive_state(order)  # type: ignore[assignment]
                await store.save_order(session, order_id, order)
                for factory in factories:
                    await self.outbox.emit(session, factory(order))
            return order

        return await once(self.db, scope, request_id, request, r.Order, work)

    # ---------------------------------------------------------------------------------------
    # Lifecycle
    # ---------------------------------------------------------------------------------------

    async def cancel(self, request: svc.CancelOrderRequest, *, customer: str, order_id: str) -> r.Order:
        reason = request.reason

        async def change(order: r.Order, _s: AsyncSession, now: datetime) -> list[EventFactory] | None:
            self.authorize(order)
            if not rules.check_cancellable(order):
                return None
            for group in order.fulfillment_groups:
                if group.state in (rules.OPEN, rules.READY):
                    await self.inventory.release(
                        group.reservation,
                        reason=f"order {order.order_number} cancelled",
                        request_id=_step_id(order, f"release:{group.reservation}"),
                    )
                    group.state = rules.CANCELLED
            order.cancel_reason = reason
            actor = current_principal.get().subject
            return [lambda o: self._cancelled_event(o, customer, reason, now, automatic=False, actor=actor)]

        return await self.mutate("CancelOrder", request, customer=customer, order_id=order_id, change=change)

    @staticmethod
    def _cancelled_event(
        order: r.Order, customer: str, reason: str, now: datetime, *, automatic: bool, actor: str
    ) -> ev.OrderCancelledEvent:
        refund = order.total.minor_units if order.payment_reference else 0
        return ev.OrderCancelledEvent(
            order=order,
            customer=f"customers/{customer}",
            reason=reason,
            automatic=automatic,
            cancelled_by=actor,
            refund_amount=money(order.currency_code, refund),
            occur_time=ts(now),
        )

    async def mark_ready(
        self,
        request: svc.MarkOrderReadyForPickupRequest,
        *,
        customer: str,
        order_id: str,
        deadline: datetime | None,
    ) -> r.Order:
        pickup_store = request.pickup_store

        async def change(order: r.Order, _s: AsyncSession, now: datetime) -> list[EventFactory] | None:
            group = rules.pickup_group(order, pickup_store)
            store_name = group.fulfillment.pickup_store
            self.authorize(order, store_name)
            if not rules.check_ready(order, group):
                return None
            latest = from_ts(order.create_time) + MAX_PICKUP
            if deadline is not None and (deadline <= now or deadline > latest):
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "pickup_deadline",
                            "must be in the future and at most 14 days after the order was placed"
                            f" ({latest.isoformat()})",
                            "OUT_OF_RANGE",
                        )
                    ]
                )
            until = deadline or min(now + self.config.pickup_window, latest)
            extended = await _refusals_of(
                order,
                self.inventory.extend(
                    group.reservation, until=until, request_id=_step_id(order, f"ready:{store_name}")
                ),
            )
            group.state = rules.READY
            group.ready_time.CopyFrom(ts(now))
            group.pickup_deadline.CopyFrom(
                extended.expire_time if extended.HasField("expire_time") else ts(until)
            )
            actor = current_principal.get().subject
            line_ids = list(group.line_ids)
            display = group.fulfillment.pickup_store_display_name
            group_deadline = group.pickup_deadline

            def event(o: r.Order) -> Message:
                return ev.OrderReadyForPickupEvent(
                    order=o,
                    customer=f"customers/{customer}",
                    pickup_store=store_name,
                    pickup_store_display_name=display,
                    pickup_deadline=group_deadline,
                    line_ids=line_ids,
                    marked_by=actor,
                    occur_time=ts(now),
                )

            return [event]

        return await self.mutate(
            "MarkOrderReadyForPickup", request, customer=customer, order_id=order_id, change=change
        )

    async def collect(self, request: svc.CollectOrderRequest, *, customer: str, order_id: str) -> r.Order:
        pickup_store = request.pickup_store

        async def change(order: r.Order, _s: AsyncSession, now: datetime) -> list[EventFactory] | None:
            group = rules.pickup_group(order, pickup_store)
            store_name = group.fulfillment.pickup_store
            self.authorize(order, store_name)
            if not rules.check_handover(order, group):
                return None
            actor = await self._hand_over(order, group, rules.COLLECTED, f"collect:{store_name}", now)
            line_ids = list(group.line_ids)
            channel = current_channel.get().to_proto()

            def event(o: r.Order) -> Message:
                return ev.OrderCollectedEvent(
                    order=o,
                    customer=f"customers/{customer}",
                    pickup_store=store_name,
                    line_ids=line_ids,
                    collected_by=actor,
                    channel=channel,
                    occur_time=ts(now),
                )

            return [event]

        return await self.mutate("CollectOrder", request, customer=customer, order_id=order_id, change=change)

    async def ship(self, request: svc.MarkOrderShippedRequest, *, customer: str, order_id: str) -> r.Order:
        tracking = request.tracking_reference

        async def change(order: r.Order, _s: AsyncSession, now: datetime) -> list[EventFactory] | None:
            group = rules.ship_group(order)
            self.authorize(order)
            if not rules.check_handover(order, group):
                return None
            await self._hand_over(order, group, rules.SHIPPED, "ship", now)
            group.tracking_reference = tracking
            line_ids = list(group.line_ids)

            def event(o: r.Order) -> Message:
                return ev.OrderShippedEvent(
                    order=o,
                    customer=f"customers/{customer}",
                    line_ids=line_ids,
                    tracking_reference=tracking,
                    occur_time=ts(now),
                )

            return [event]

        return await self.mutate(
            "MarkOrderShipped", request, customer=customer, order_id=order_id, change=change
        )

    async def _hand_over(
        self, order: r.Order, group: r.FulfillmentGroup, state: int, step: str, now: datetime
    ) -> str:
        """The goods of ``group`` leave (collected or shipped): commit its reservation in the
        inventory, then record who handed them over and when; returns who did."""
        await _refusals_of(
            order,
            self.inventory.commit(
                group.reservation, reference=order.order_number, request_id=_step_id(order, step)
            ),
        )
        group.state = state  # type: ignore[assignment]
        group.fulfill_time.CopyFrom(ts(now))
        group.fulfilled_by = current_principal.get().subject
        return group.fulfilled_by

    async def reservation_expired(self, session: AsyncSession, reservation: str, owner: str) -> bool:
        """A group's reservation expired (pickup not collected in time): cancel that group, and
        the order once nothing is left. Runs in the consumer's transaction."""
        parsed = names.parse(ORDER_PATTERN, owner)
        if parsed is None:
            return False
        order = await store.load_order(session, parsed["customer"], parsed["order"], lock=True)
        if order is None:
            return False
        hit = [
            g
            for g in order.fulfillment_groups
            if g.reservation == reservation and g.state in (rules.OPEN, rules.READY)
        ]
        if not hit:
            return False
        now = datetime.now(UTC)
        for group in hit:
            group.state = rules.CANCELLED
        order.etag = str(int(order.etag or 0) + 1)
        order.update_time.CopyFrom(ts(now))
        order.state = rules.derive_state(order)  # type: ignore[assignment]
        reason = "the goods were not collected before the pickup deadline"
        if order.state == r.ORDER_STATE_CANCELLED:
            order.cancel_reason = reason
        await store.save_order(session, parsed["order"], order)
        if order.state == r.ORDER_STATE_CANCELLED:
            await self.outbox.emit(
                session,
                self._cancelled_event(order, parsed["customer"], reason, now, automatic=True, actor=""),
            )
        return True
