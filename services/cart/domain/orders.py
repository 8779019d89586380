"""The order's fulfilment groups and lifecycle.

Checkout groups lines by fulfilment: one group for everything shipped, then one per pickup store
(in the order the stores first appear in the cart). Each group has its own reservation and moves
on its own (OPEN → READY_FOR_PICKUP → COLLECTED, OPEN → SHIPPED, or CANCELLED); the order's state
is derived from its groups so it can never disagree with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from omni.cart.v1 import resources_pb2 as r
from omni_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.cart.domain.model import Fulfillment, Line, Method

DOMAIN = "omni.cart"
G = r.FulfillmentGroupState
OPEN = r.FULFILLMENT_GROUP_STATE_OPEN
READY = r.FULFILLMENT_GROUP_STATE_READY_FOR_PICKUP
COLLECTED = r.FULFILLMENT_GROUP_STATE_COLLECTED
SHIPPED = r.FULFILLMENT_GROUP_STATE_SHIPPED
CANCELLED = r.FULFILLMENT_GROUP_STATE_CANCELLED
FULFILLED = (COLLECTED, SHIPPED)


def plan_groups(lines: Sequence[Line]) -> list[tuple[Fulfillment, list[Line]]]:
    """SHIP lines first (one group), then one group per pickup store, stores in first-seen order."""
    groups: dict[tuple[int, str], tuple[Fulfillment, list[Line]]] = {}
    ship = [ln for ln in lines if not ln.fulfillment.is_pickup]
    out: list[tuple[Fulfillment, list[Line]]] = []
    if ship:
        out.append((Fulfillment(Method.SHIP), ship))
    for line in lines:
        if line.fulfillment.is_pickup:
            key = line.fulfillment.key
            if key not in groups:
                groups[key] = (line.fulfillment, [])
                out.append(groups[key])
            groups[key][1].append(line)
    return out


def group_key(fulfillment: Fulfillment) -> str:
    """A stable name for a group, used to derive its reservation's request id."""
    return "ship" if not fulfillment.is_pickup else f"pickup:{fulfillment.pickup_store}"


def derive_state(order: r.Order) -> int:
    live = [g.state for g in order.fulfillment_groups if g.state != CANCELLED]
    if not live:
        return r.ORDER_STATE_CANCELLED
    if READY in live:
        return r.ORDER_STATE_READY_FOR_PICKUP
    done = [s for s in live if s in FULFILLED]
    if len(done) == len(live):
        return r.ORDER_STATE_COMPLETED
    if done:
        return r.ORDER_STATE_PARTIALLY_FULFILLED
    return r.ORDER_STATE_PLACED


def pickup_stores(order: r.Order) -> list[str]:
    return [
        g.fulfillment.pickup_store
        for g in order.fulfillment_groups
        if g.fulfillment.method == r.FULFILLMENT_METHOD_PICKUP
    ]


def pickup_group(order: r.Order, store: str) -> r.FulfillmentGroup:
    """The pickup group a store-side action is about; ``store`` may be empty with one store."""
    groups = [g for g in order.fulfillment_groups if g.fulfillment.method == r.FULFILLMENT_METHOD_PICKUP]
    if not groups:
        raise FailedPrecondition(
            f"{order.name} has nothing to pick up in a store",
            reason="NO_PICKUP_GROUP",
            domain=DOMAIN,
            metadata={"resource": order.name},
        )
    if not store:
        if len(groups) > 1:
            raise InvalidArgument(
                [FieldViolation("pickup_store", "is required: the order is collected at several stores")]
            )
        return groups[0]
    for group in groups:
        if group.fulfillment.pickup_store == store:
            return group
    raise FailedPrecondition(
        f"{order.name} has nothing to pick up at {store}",
        reason="NO_PICKUP_AT_STORE",
        domain=DOMAIN,
        metadata={"resource": order.name, "pickup_store": store},
    )


def ship_group(order: r.Order) -> r.FulfillmentGroup:
    for group in order.fulfillment_groups:
        if group.fulfillment.method == r.FULFILLMENT_METHOD_SHIP:
            return group
    raise FailedPrecondition(
        f"{order.name} has nothing to ship",
        reason="NO_SHIP_GROUP",
        domain=DOMAIN,
        metadata={"resource": order.name},
    )


def check_cancellable(order: r.Order) -> bool:
    """True when there is something to cancel; False for an already CANCELLED order."""
    if order.state == r.ORDER_STATE_CANCELLED:
        return False
    if any(g.state in FULFILLED for g in order.fulfillment_groups):
        raise FailedPrecondition(
            f"{order.name} was partly handed over; it can no longer be cancelled",
            reason="ORDER_PARTIALLY_FULFILLED",
            domain=DOMAIN,
            metadata={"resource": order.name},
        )
    return True


def check_ready(order: r.Order, group: r.FulfillmentGroup) -> bool:
    """True when the group should become READY; False when it already is."""
    if group.state == READY:
        return False
    if group.state != OPEN:
        raise FailedPrecondition(
            f"the pickup at {group.fulfillment.pickup_store} is {G.Name(group.state)}, not OPEN",
            reason="GROUP_NOT_OPEN",
            domain=DOMAIN,
            metadata={"resource": order.name, "pickup_store": group.fulfillment.pickup_store},
        )
    return True


def check_handover(order: r.Order, group: r.FulfillmentGroup) -> bool:
    """True when the group may be collected or shipped now; False when it already was."""
    if group.state in FULFILLED:
        return False
    if group.state == CANCELLED:
        raise FailedPrecondition(
            f"that part of {order.name} was cancelled",
            reason="GROUP_CANCELLED",
            domain=DOMAIN,
            metadata={"resource": order.name},
        )
    return True
