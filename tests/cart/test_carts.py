"""Cart lines across channels: pricing from the catalogue, limits, fulfilment, validation, access."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from tests.cart.conftest import Caller, Catalogue, add, cart_replica, details, pickup, reason, rid, stub


async def fails(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_a_customer_who_never_added_anything_has_an_empty_cart(customer) -> None:
    name, api = customer()
    cart = await api.GetCart(svc.GetCartRequest(name=f"{name}/cart"))
    assert cart.name == f"{name}/cart" and not cart.lines and cart.etag == "0"
    assert cart.total.minor_units == 0 and cart.currency_code == "EUR"


async def test_lines_are_priced_from_the_catalogue_and_remember_their_channel(
    catalogue: Catalogue, customer
) -> None:
    item = await catalogue.item(1999)
    name, web = customer("web")
    cart_name = f"{name}/cart"
    cart = await web.AddCartLine(add(cart_name, item, 2, request_id=rid()))
    line = cart.lines[0]
    assert (line.item, line.quantity, line.unit_price.minor_units, line.line_total.minor_units) == (
        item,
        2,
        1999,
        3998,
    )
    assert line.title.startswith("Thing") and line.added_by.channel == channel_pb2.CHANNEL_WEB
    assert line.fulfillment.method == r.FULFILLMENT_METHOD_SHIP
    assert (cart.subtotal.minor_units, cart.total.minor_units, cart.item_count) == (3998, 3998, 2)
    assert cart.last_channel.channel == channel_pb2.CHANNEL_WEB

    # The same item and fulfilment raises the line; the till sees and changes the same cart.
    pos = Caller(web.stub, web.metadata[0][1].removeprefix("Bearer "), "store_pos", catalogue.store)
    raised = await pos.AddCartLine(add(cart_name, item, 1, request_id=rid()))
    assert [(ln.line_id, ln.quantity) for ln in raised.lines] == [(line.line_id, 3)]
    assert raised.last_channel.channel == channel_pb2.CHANNEL_STORE_POS
    assert raised.last_channel.store == catalogue.store

    updated = await pos.UpdateCartLine(
        svc.UpdateCartLineRequest(
            name=cart_name,
            line_id=line.line_id,
            line=r.CartLine(quantity=5),
            etag=raised.etag,
            request_id=rid(),
        )
    )
    assert updated.lines[0].quantity == 5 and int(updated.etag) == int(raised.etag) + 1
    removed = await web.RemoveCartLine(
        svc.RemoveCartLineRequest(name=cart_name, line_id=line.line_id, request_id=rid())
    )
    assert not removed.lines
    error = await fails(
        web.RemoveCartLine(svc.RemoveCartLineRequest(name=cart_name, line_id=line.line_id, request_id=rid())),
        grpc.StatusCode.NOT_FOUND,
    )
    assert reason(error) == "LINE_NOT_FOUND"


async def test_quantity_limits_per_line_and_per_cart(catalogue: Catalogue, customer) -> None:
    item = await catalogue.item(100)
    name, api = customer()
    cart_name = f"{name}/cart"
    await api.AddCartLine(add(cart_name, item, 990, request_id=rid()))
    error = await fails(
        api.AddCartLine(add(cart_name, item, 10, request_id=rid())), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details(error)["BadRequest"].field_violations[0].field == "line.quantity"
    error = await fails(
        api.AddCartLine(add(cart_name, item, 1000, request_id=rid())), grpc.StatusCode.INVALID_ARGUMENT
    )
    error = await fails(
        api.AddCartLine(add(cart_name, item, 0, request_id=rid())), grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_per_cart_limits_come_from_settings(
    catalogue: Catalogue, cart_settings, key_source, make_token
) -> None:
    items = [await catalogue.item(100) for _ in range(3)]
    async with cart_replica(
        cart_settings(OMNI_CART_MAX_LINES="2", OMNI_CART_MAX_UNITS="10"), key_source, make_token
    ) as small:
        name = "customers/limits-1"
        api = Caller(stub(small), make_token(name, ["customer"]))
        cart_name = f"{name}/cart"
        await api.AddCartLine(add(cart_name, items[0], 4, request_id=rid()))
        await api.AddCartLine(add(cart_name, items[1], 4, request_id=rid()))
        error = await fails(
            api.AddCartLine(add(cart_name, items[2], 1, request_id=rid())),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert reason(error) == "CART_LINE_LIMIT"
        error = await fails(
            api.AddCartLine(add(cart_name, items[0], 3, request_id=rid())),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert reason(error) == "CART_QUANTITY_LIMIT"
        assert (await api.GetCart(svc.GetCartRequest(name=cart_name))).item_count == 8


async def test_currency_items_and_prices_are_checked(catalogue: Catalogue, customer) -> None:
    both = await catalogue.item(1000, usd=1100)
    euro_only = await catalogue.item(500)
    inactive = await catalogue.item(500, active=False)
    name, api = customer()
    cart_name = f"{name}/cart"
    cart = await api.AddCartLine(add(cart_name, both, 1, currency_code="USD", request_id=rid()))
    assert (
        cart.currency_code == "USD" and cart.total.currency_code == "USD" and cart.total.minor_units == 1100
    )
    assert (
        reason(
            await fails(
                api.AddCartLine(add(cart_name, euro_only, request_id=rid())),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        )
        == "NO_PRICE_IN_CURRENCY"
    )
    assert (
        reason(
            await fails(
                api.AddCartLine(add(cart_name, both, currency_code="EUR", request_id=rid())),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        )
        == "CURRENCY_MISMATCH"
    )
    assert (
        reason(
            await fails(
                api.AddCartLine(add(cart_name, inactive, request_id=rid())),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        )
        == "ITEM_INACTIVE"
    )
    assert (
        reason(
            await fails(
                api.AddCartLine(add(cart_name, "items/NOPE-1", request_id=rid())), grpc.StatusCode.NOT_FOUND
            )
        )
        == "ITEM_NOT_FOUND"
    )
    cleared = await api.ClearCart(svc.ClearCartRequest(name=cart_name, request_id=rid()))
    assert not cleared.lines and int(cleared.etag) == int(cart.etag) + 1
    # An empty cart may change currency again.
    euro = await api.AddCartLine(add(cart_name, euro_only, request_id=rid()))
    assert euro.currency_code == "EUR"


async def test_pickup_lines_name_a_store_that_offers_pickup(catalogue: Catalogue, customer) -> None:
    item = await catalogue.item(800)
    name, api = customer()
    cart_name = f"{name}/cart"
    cart = await api.AddCartLine(
        add(cart_name, item, 1, fulfillment=pickup(catalogue.store), request_id=rid())
    )
    line = cart.lines[0]
    assert line.fulfillment.method == r.FULFILLMENT_METHOD_PICKUP
    assert (line.fulfillment.pickup_store, line.fulfillment.pickup_store_display_name) == (
        catalogue.store,
        catalogue.store_name,
    )
    # Same item shipped is another line; moving it to the same pickup store merges the two.
    cart = await api.AddCartLine(add(cart_name, item, 2, request_id=rid()))
    assert len(cart.lines) == 2
    shipped = next(ln for ln in cart.lines if ln.fulfillment.method == r.FULFILLMENT_METHOD_SHIP)
    merged = await api.UpdateCartLine(
        svc.UpdateCartLineRequest(
            name=cart_name,
            line_id=shipped.line_id,
            line=r.CartLine(fulfillment=pickup(catalogue.store)),
            update_mask=field_mask_pb2.FieldMask(paths=["fulfillment"]),
            request_id=rid(),
        )
    )
    assert [(ln.line_id, ln.quantity) for ln in merged.lines] == [(shipped.line_id, 3)]
    error = await fails(
        api.AddCartLine(add(cart_name, item, fulfillment=pickup(catalogue.warehouse), request_id=rid())),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(error) == "PICKUP_NOT_OFFERED"
    error = await fails(
        api.AddCartLine(add(cart_name, item, fulfillment=pickup("locations/nowhere-1"), request_id=rid())),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert reason(error) == "PICKUP_NOT_OFFERED"


async def test_invalid_requests_list_every_bad_field(customer, staff) -> None:
    name, api = customer()
    admin = staff("admin")
    bad = svc.AddCartLineRequest(
        name="customers//cart",
        line=r.CartLine(
            item="sku-without-prefix",
            quantity=0,
            fulfillment=r.LineFulfillment(method=r.FULFILLMENT_METHOD_PICKUP),
        ),
        currency_code="eur",
        request_id="not-a-uuid",
    )
    error = await fails(admin.AddCartLine(bad), grpc.StatusCode.INVALID_ARGUMENT)
    fields = {v.field for v in details(error)["BadRequest"].field_violations}
    assert fields == {
        "name",
        "line.item",
        "line.quantity",
        "line.fulfillment.pickup_store",
        "currency_code",
        "request_id",
    }
    error = await fails(
        api.UpdateCartLine(svc.UpdateCartLineRequest(name=f"{name}/cart", line_id="l1", line=r.CartLine())),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert {v.field for v in details(error)["BadRequest"].field_violations} == {"update_mask"}
    error = await fails(
        api.Checkout(svc.CheckoutRequest(name=f"{name}/cart")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert {v.field for v in details(error)["BadRequest"].field_violations} == {"etag", "request_id"}


async def test_a_customer_cannot_touch_another_customers_cart(customer, catalogue: Catalogue) -> None:
    _mine, api = customer()
    theirs, _ = customer()
    await fails(api.GetCart(svc.GetCartRequest(name=f"{theirs}/cart")), grpc.StatusCode.PERMISSION_DENIED)
    item = await catalogue.item(100)
    await fails(
        api.AddCartLine(add(f"{theirs}/cart", item, request_id=rid())), grpc.StatusCode.PERMISSION_DENIED
    )
    await fails(
        api.ListOrders(svc.ListOrdersRequest(parent="customers/-")), grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_store_associate_works_on_the_customers_cart_at_the_till(
    catalogue: Catalogue, customer, staff
) -> None:
    item = await catalogue.item(1200)
    name, web = customer("web")
    await web.AddCartLine(add(f"{name}/cart", item, 1, request_id=rid()))
    till = staff("store_associate", store=catalogue.store, channel="store_pos")
    cart = await till.GetCart(svc.GetCartRequest(name=f"{name}/cart"))
    assert cart.lines[0].item == item and cart.lines[0].added_by.channel == channel_pb2.CHANNEL_WEB
    raised = await till.AddCartLine(add(f"{name}/cart", item, 1, etag=cart.etag, request_id=rid()))
    assert raised.lines[0].quantity == 2


async def test_stale_price_snapshots_are_refreshed_at_the_next_change(
    catalogue: Catalogue, cart_settings, key_source, make_token
) -> None:
    item, other = await catalogue.item(1000), await catalogue.item(300)
    async with cart_replica(
        cart_settings(OMNI_CART_PRICE_TTL_SECONDS="0.3", OMNI_CART_CATALOGUE_CACHE_SECONDS="0"),
        key_source,
        make_token,
    ) as fast:
        name = "customers/ttl-1"
        api = Caller(stub(fast), make_token(name, ["customer"]))
        cart_name = f"{name}/cart"
        first = await api.AddCartLine(add(cart_name, item, 2, request_id=rid()))
        await catalogue.set_price(item, 1200)
        # Within the TTL every channel keeps seeing the snapshot it was given.
        assert (await api.GetCart(svc.GetCartRequest(name=cart_name))).total.minor_units == 2000
        await asyncio.sleep(0.4)
        changed = await api.AddCartLine(add(cart_name, other, 1, request_id=rid()))
        repriced = next(ln for ln in changed.lines if ln.item == item)
        assert repriced.unit_price.minor_units == 1200 and changed.total.minor_units == 2400 + 300
        assert repriced.price_time.ToDatetime() > first.lines[0].price_time.ToDatetime()
