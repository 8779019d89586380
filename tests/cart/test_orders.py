"""Checkout into orders, and the order's life: pickup in store, shipping, cancellation."""

from __future__ import annotations

import grpc
import pytest

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import events_pb2 as ev
from omni.cart.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from omni_runtime.testing.services import RunningService
from tests.cart.conftest import ADDRESS, Caller, Catalogue, Events, add, details, pickup, reason, rid


async def fails(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def checkout(api: Caller, cart_name: str, etag: str, **kw) -> r.Order:  # type: ignore[no-untyped-def]
    return await api.Checkout(
        svc.CheckoutRequest(name=cart_name, etag=etag, request_id=kw.pop("request_id", rid()), **kw)
    )


async def test_checkout_reserves_each_group_records_the_order_and_empties_the_cart(
    catalogue: Catalogue, customer, events: Events
) -> None:
    shipped = await catalogue.item(1500, stock=10)
    at_store = await catalogue.item(900, stock=0)
    await catalogue.receive(catalogue.store, at_store, 4)
    await catalogue.receive(catalogue.other_store, shipped, 3)
    name, api = customer("web")
    cart_name = f"{name}/cart"
    await api.AddCartLine(add(cart_name, shipped, 2, request_id=rid()))
    await api.AddCartLine(add(cart_name, at_store, 3, fulfillment=pickup(catalogue.store), request_id=rid()))
    cart = await api.AddCartLine(
        add(cart_name, shipped, 1, fulfillment=pickup(catalogue.other_store), request_id=rid())
    )
    request_id = rid()

    order = await checkout(
        api, cart_name, cart.etag, request_id=request_id, shipping_address=ADDRESS, payment_reference="psp-1"
    )
    assert order.name.startswith(f"{name}/orders/") and order.order_number.startswith("O-")
    assert order.state == r.ORDER_STATE_PLACED
    assert [ln.line_id for ln in order.lines] == [ln.line_id for ln in cart.lines]
    assert (order.subtotal.minor_units, order.total.minor_units) == (3000 + 2700 + 1500, 7200)
    groups = order.fulfillment_groups
    assert [(g.fulfillment.method, g.fulfillment.pickup_store) for g in groups] == [
        (r.FULFILLMENT_METHOD_SHIP, ""),
        (r.FULFILLMENT_METHOD_PICKUP, catalogue.store),
        (r.FULFILLMENT_METHOD_PICKUP, catalogue.other_store),
    ]
    assert all(g.state == r.FULFILLMENT_GROUP_STATE_OPEN and g.reservation for g in groups)
    assert len({g.reservation for g in groups}) == 3
    assert list(order.pickup_stores) == [catalogue.store, catalogue.other_store]
    pickup_line = next(ln for ln in order.lines if ln.item == at_store)
    assert [(a.location, a.quantity) for a in pickup_line.allocations] == [(catalogue.store, 3)]
    assert order.shipping_address == ADDRESS and order.payment_reference == "psp-1"
    assert order.channel.channel == channel_pb2.CHANNEL_WEB and order.placed_by == name
    assert (await catalogue.level(catalogue.store, at_store)).reserved == 3
    assert (await catalogue.level(catalogue.warehouse, shipped)).reserved == 2
    assert (await catalogue.level(catalogue.other_store, shipped)).reserved == 1

    emptied = await api.GetCart(svc.GetCartRequest(name=cart_name))
    assert not emptied.lines and int(emptied.etag) == int(cart.etag) + 1
    # A retry of the same checkout answers the same order and reserves nothing more.
    again = await checkout(
        api, cart_name, cart.etag, request_id=request_id, shipping_address=ADDRESS, payment_reference="psp-1"
    )
    assert again == order
    assert (await catalogue.level(catalogue.store, at_store)).reserved == 3
    assert await api.GetOrder(svc.GetOrderRequest(name=order.name)) == order

    placed = await events.wait_for(ev.OrderPlacedEvent, lambda e: e.order.name == order.name)
    assert placed.customer == name and placed.cart == cart_name and placed.order.total.minor_units == 7200
    checked_out = await events.wait_for(
        ev.CartUpdatedEvent, lambda e: e.cart == cart_name and e.kind == r.CART_CHANGE_KIND_CHECKED_OUT
    )
    assert checked_out.order == order.name and checked_out.etag == emptied.etag


async def test_checkout_preconditions(catalogue: Catalogue, customer) -> None:
    item = await catalogue.item(1000)
    await catalogue.receive(catalogue.store, item, 5)
    name, api = customer()
    cart_name = f"{name}/cart"
    empty = await api.GetCart(svc.GetCartRequest(name=cart_name))
    assert (
        reason(await fails(checkout(api, cart_name, empty.etag), grpc.StatusCode.FAILED_PRECONDITION))
        == "CART_EMPTY"
    )
    cart = await api.AddCartLine(add(cart_name, item, 1, request_id=rid()))
    error = await fails(checkout(api, cart_name, cart.etag), grpc.StatusCode.INVALID_ARGUMENT)
    assert details(error)["BadRequest"].field_violations[0].field == "shipping_address"
    error = await fails(
        checkout(api, cart_name, empty.etag, shipping_address=ADDRESS), grpc.StatusCode.ABORTED
    )
    assert details(error)["ErrorInfo"].metadata["current_etag"] == cart.etag
    # Pickup only: no address needed.
    moved = await api.UpdateCartLine(
        svc.UpdateCartLineRequest(
            name=cart_name,
            line_id=cart.lines[0].line_id,
            line=r.CartLine(fulfillment=pickup(catalogue.store)),
            request_id=rid(),
        )
    )
    order = await checkout(api, cart_name, moved.etag)
    assert not order.HasField("shipping_address") and list(order.pickup_stores) == [catalogue.store]


async def test_a_price_change_updates_the_cart_and_asks_for_confirmation(
    catalogue: Catalogue, customer
) -> None:
    item = await catalogue.item(1000)
    name, api = customer()
    cart_name = f"{name}/cart"
    cart = await api.AddCartLine(add(cart_name, item, 2, request_id=rid()))
    await catalogue.set_price(item, 1100)
    error = await fails(
        checkout(api, cart_name, cart.etag, shipping_address=ADDRESS), grpc.StatusCode.FAILED_PRECONDITION
    )
    info = details(error)["ErrorInfo"]
    assert info.reason == "PRICE_CHANGED" and info.metadata["total"] == "2200"
    repriced = await api.GetCart(svc.GetCartRequest(name=cart_name))
    assert repriced.total.minor_units == 2200 and repriced.etag == info.metadata["current_etag"] != cart.etag
    order = await checkout(api, cart_name, repriced.etag, shipping_address=ADDRESS)
    assert order.total.minor_units == 2200


async def test_a_line_that_can_no_longer_be_sold_is_named(catalogue: Catalogue, customer) -> None:
    good, gone = await catalogue.item(1000), await catalogue.item(1000)
    name, api = customer()
    cart_name = f"{name}/cart"
    await api.AddCartLine(add(cart_name, good, 1, request_id=rid()))
    cart = await api.AddCartLine(add(cart_name, gone, 1, request_id=rid()))
    await catalogue.deactivate(gone)
    error = await fails(
        checkout(api, cart_name, cart.etag, shipping_address=ADDRESS), grpc.StatusCode.FAILED_PRECONDITION
    )
    found = details(error)
    assert found["ErrorInfo"].reason == "ITEM_INACTIVE"
    line_id = next(ln.line_id for ln in cart.lines if ln.item == gone)
    assert [v.subject for v in found["PreconditionFailure"].violations] == [f"lines[{line_id}]"]


async def test_pickup_ready_and_collected_by_an_associate_of_that_store(
    catalogue: Catalogue, customer, staff, events: Events
) -> None:
    item = await catalogue.item(2000, stock=0)
    await catalogue.receive(catalogue.store, item, 5)
    name, api = customer()
    cart_name = f"{name}/cart"
    cart = await api.AddCartLine(
        add(cart_name, item, 2, fulfillment=pickup(catalogue.store), request_id=rid())
    )
    order = await checkout(api, cart_name, cart.etag)
    elsewhere = staff("store_associate", store=catalogue.other_store, channel="store_associate")
    here = staff("store_associate", store=catalogue.store, channel="store_associate")

    error = await fails(
        elsewhere.MarkOrderReadyForPickup(svc.MarkOrderReadyForPickupRequest(name=order.name)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert reason(error) == "STORE_SCOPE"
    await fails(elsewhere.GetOrder(svc.GetOrderRequest(name=order.name)), grpc.StatusCode.PERMISSION_DENIED)

    ready = await here.MarkOrderReadyForPickup(
        svc.MarkOrderReadyForPickupRequest(name=order.name, request_id=rid())
    )
    assert ready.state == r.ORDER_STATE_READY_FOR_PICKUP and ready.etag == "2"
    group = ready.fulfillment_groups[0]
    assert group.state == r.FULFILLMENT_GROUP_STATE_READY_FOR_PICKUP and group.HasField("pickup_deadline")
    again = await here.MarkOrderReadyForPickup(
        svc.MarkOrderReadyForPickupRequest(name=order.name, request_id=rid())
    )
    assert again.etag == ready.etag
    notice = await events.wait_for(ev.OrderReadyForPickupEvent, lambda e: e.order.name == order.name)
    assert notice.pickup_store == catalogue.store and notice.pickup_store_display_name == catalogue.store_name

    work = await here.ListOrders(
        svc.ListOrdersRequest(
            parent="customers/-",
            filter=f'pickup_stores:"{catalogue.store}" AND state = ORDER_STATE_READY_FOR_PICKUP',
        )
    )
    assert order.name in [o.name for o in work.orders]
    assert all(catalogue.store in o.pickup_stores for o in work.orders)

    stale = fails(
        here.CollectOrder(svc.CollectOrderRequest(name=order.name, etag="1", request_id=rid())),
        grpc.StatusCode.ABORTED,
    )
    assert details(await stale)["ErrorInfo"].metadata["current_etag"] == "2"
    collected = await here.CollectOrder(svc.CollectOrderRequest(name=order.name, etag="2", request_id=rid()))
    assert collected.state == r.ORDER_STATE_COMPLETED
    assert collected.fulfillment_groups[0].state == r.FULFILLMENT_GROUP_STATE_COLLECTED
    assert collected.fulfillment_groups[0].fulfilled_by.startswith("staffMembers/")
    level = await catalogue.level(catalogue.store, item)
    assert (level.on_hand, level.reserved) == (3, 0)
    error = await fails(
        api.CancelOrder(svc.CancelOrderRequest(name=order.name, request_id=rid())),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(error) == "ORDER_PARTIALLY_FULFILLED"


async def test_cancel_releases_stock_and_shipping_commits_it(
    catalogue: Catalogue, customer, staff, events: Events
) -> None:
    item = await catalogue.item(1000, stock=10)
    name, api = customer()
    cart_name = f"{name}/cart"
    cart = await api.AddCartLine(add(cart_name, item, 4, request_id=rid()))
    order = await checkout(api, cart_name, cart.etag, shipping_address=ADDRESS, payment_reference="psp-9")
    assert (await catalogue.level(catalogue.warehouse, item)).reserved == 4
    cancelled = await api.CancelOrder(
        svc.CancelOrderRequest(name=order.name, reason="changed my mind", request_id=rid())
    )
    assert cancelled.state == r.ORDER_STATE_CANCELLED and cancelled.cancel_reason == "changed my mind"
    assert (await catalogue.level(catalogue.warehouse, item)).reserved == 0
    assert (
        await api.CancelOrder(svc.CancelOrderRequest(name=order.name, request_id=rid()))
    ).etag == cancelled.etag
    notice = await events.wait_for(ev.OrderCancelledEvent, lambda e: e.order.name == order.name)
    assert notice.refund_amount.minor_units == 4000 and not notice.automatic and notice.cancelled_by == name

    cart = await api.AddCartLine(add(cart_name, item, 2, request_id=rid()))
    second = await checkout(api, cart_name, cart.etag, shipping_address=ADDRESS)
    warehouse = staff("service", channel="backoffice")
    await fails(
        api.MarkOrderShipped(svc.MarkOrderShippedRequest(name=second.name)), grpc.StatusCode.PERMISSION_DENIED
    )
    shipped = await warehouse.MarkOrderShipped(
        svc.MarkOrderShippedRequest(name=second.name, tracking_reference="TRK-1", request_id=rid())
    )
    assert (
        shipped.state == r.ORDER_STATE_COMPLETED
        and shipped.fulfillment_groups[0].tracking_reference == "TRK-1"
    )
    level = await catalogue.level(catalogue.warehouse, item)
    assert (level.on_hand, level.reserved) == (8, 0)


async def test_listing_orders_pages_filters_and_scopes(catalogue: Catalogue, customer, staff) -> None:
    item = await catalogue.item(100, stock=50)
    name, api = customer()
    cart_name = f"{name}/cart"
    placed = []
    for _ in range(3):
        cart = await api.AddCartLine(add(cart_name, item, 1, request_id=rid()))
        placed.append(await checkout(api, cart_name, cart.etag, shipping_address=ADDRESS))
    first = await api.ListOrders(svc.ListOrdersRequest(parent=name, page_size=2))
    assert first.total_size == 3 and len(first.orders) == 2 and first.next_page_token
    rest = await api.ListOrders(
        svc.ListOrdersRequest(parent=name, page_size=2, page_token=first.next_page_token)
    )
    assert [o.name for o in [*first.orders, *rest.orders]] == [o.name for o in reversed(placed)]
    assert not rest.next_page_token and rest.total_size == 3
    oldest = await api.ListOrders(svc.ListOrdersRequest(parent=name, order_by="create_time"))
    assert [o.name for o in oldest.orders] == [o.name for o in placed]
    by_number = await api.ListOrders(
        svc.ListOrdersRequest(parent=name, filter=f'order_number = "{placed[1].order_number}"')
    )
    assert [o.name for o in by_number.orders] == [placed[1].name]
    error = await fails(
        api.ListOrders(svc.ListOrdersRequest(parent=name, filter="colour = red")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details(error)["BadRequest"].field_violations[0].field == "filter"
    await fails(
        api.ListOrders(
            svc.ListOrdersRequest(
                parent=name,
                page_size=1,
                page_token=first.next_page_token,
                filter="state = ORDER_STATE_PLACED",
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # An associate sees only orders picked up at their store; none of these are.
    associate = staff("store_associate", store=catalogue.store)
    mine = await associate.ListOrders(svc.ListOrdersRequest(parent=name))
    assert not mine.orders
    agent = staff("agent", channel="call_center")
    assert len((await agent.ListOrders(svc.ListOrdersRequest(parent=name))).orders) == 3


async def test_reservations_of_a_checkout_that_died_midway_are_released(
    catalogue: Catalogue, database_url: str, cart: RunningService
) -> None:
    """A process that dies between reserving and committing leaves a journal row; the sweeper
    (of any replica) releases what that attempt reserved once it cannot still be running."""
    from sqlalchemy import text

    from omni.inventory.v1 import inventory_service_pb2 as inv
    from omni.inventory.v1 import resources_pb2 as inv_r
    from omni_runtime.db.engine import Database

    item = await catalogue.item(100, stock=5)
    order_name = f"customers/{rid()[:8]}/orders/{rid().replace('-', '')}"
    held = await catalogue.api.CreateReservation(
        inv.CreateReservationRequest(
            reservation=inv_r.Reservation(
                lines=[inv_r.ReservationLine(item=item, quantity=2)], owner=order_name
            ),
            request_id=rid(),
        )
    )
    assert (await catalogue.level(catalogue.warehouse, item)).reserved == 2
    db = Database(database_url, pool_size=1, max_overflow=0)
    try:
        async with db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO checkout_attempts (order_name, customer, started)"
                    " VALUES (:o, 'crashed', now() - interval '1 hour')"
                ),
                {"o": order_name},
            )

        async def released() -> bool:
            return (await catalogue.level(catalogue.warehouse, item)).reserved == 0

        from tests.cart.conftest import eventually

        await eventually(released, 10)
        async with db.transaction() as session:
            left = (
                await session.execute(
                    text("SELECT count(*) FROM checkout_attempts WHERE order_name = :o"), {"o": order_name}
                )
            ).scalar()
        assert left == 0
    finally:
        await db.close()
    answer = await catalogue.api.GetReservation(inv.GetReservationRequest(name=held.name))
    assert answer.state == inv_r.RESERVATION_STATE_RELEASED
