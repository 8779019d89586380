"""The issue's "done when": real concurrent clients, two cart replicas over one database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from omni_runtime.config import Settings
from omni_runtime.testing.services import RunningService
from tests.cart.conftest import (
    ADDRESS,
    Caller,
    Catalogue,
    add,
    cart_replica,
    details,
    pickup,
    reason,
    rid,
    stub,
)


@pytest.fixture(scope="module")
async def replica_b(
    cart: RunningService, cart_settings: Callable[..., Settings], key_source, make_token
) -> AsyncIterator[RunningService]:
    """A second cart process on the same database: a channel may land on either."""
    async with cart_replica(cart_settings(), key_source, make_token) as running:
        yield running


async def test_two_channels_edit_one_cart_one_wins_the_other_retries_with_the_new_etag(
    catalogue: Catalogue, customer
) -> None:
    shoes, socks = await catalogue.item(5990), await catalogue.item(490)
    name, web = customer("web")
    app = Caller(web.stub, web.metadata[0][1].removeprefix("Bearer "), "mobile_app")
    cart_name = f"{name}/cart"
    seen = await web.GetCart(svc.GetCartRequest(name=cart_name))

    results = await asyncio.gather(
        web.AddCartLine(add(cart_name, shoes, etag=seen.etag, request_id=rid())),
        app.AddCartLine(add(cart_name, socks, etag=seen.etag, request_id=rid())),
        return_exceptions=True,
    )
    won = [x for x in results if isinstance(x, r.Cart)]
    lost = [x for x in results if isinstance(x, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].code() == grpc.StatusCode.ABORTED
    info = details(lost[0])["ErrorInfo"]
    assert info.reason == "CONCURRENT_MODIFICATION" and info.domain == "omni.cart"
    assert info.metadata["current_etag"] == won[0].etag

    loser = app if results[1] is lost[0] else web
    item = socks if loser is app else shoes
    retried = await loser.AddCartLine(
        add(cart_name, item, etag=info.metadata["current_etag"], request_id=rid())
    )
    assert {line.item for line in retried.lines} == {shoes, socks}
    channels = {line.item: line.added_by.channel for line in retried.lines}
    assert channels == {shoes: channel_pb2.CHANNEL_WEB, socks: channel_pb2.CHANNEL_MOBILE_APP}
    assert retried.total.minor_units == 5990 + 490
    # The same cart, the same total, on the other channel.
    assert (await app.GetCart(svc.GetCartRequest(name=cart_name))).total == retried.total


async def test_a_retried_add_is_applied_once_even_when_the_retries_race(
    catalogue: Catalogue, customer
) -> None:
    item = await catalogue.item(1000)
    name, api = customer()
    cart_name = f"{name}/cart"
    request = add(cart_name, item, 2, request_id=rid())
    first = await api.AddCartLine(request)
    again = await api.AddCartLine(request)
    assert again == first

    racing = add(cart_name, item, 3, request_id=rid())
    answers = await asyncio.gather(*(api.AddCartLine(racing) for _ in range(6)))
    assert len({a.etag for a in answers}) == 1
    final = await api.GetCart(svc.GetCartRequest(name=cart_name))
    assert [line.quantity for line in final.lines] == [5]
    assert final.etag == answers[0].etag

    reused = add(cart_name, item, 7, request_id=request.request_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.AddCartLine(reused)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)["BadRequest"].field_violations[0].reason == "REQUEST_ID_REUSED"


async def test_a_watcher_on_replica_a_sees_a_change_made_through_replica_b(
    catalogue: Catalogue, customer, cart: RunningService, replica_b: RunningService
) -> None:
    item = await catalogue.item(700)
    name, on_a = customer("web")
    on_b = Caller(stub(replica_b), on_a.metadata[0][1].removeprefix("Bearer "), "store_pos")
    cart_name = f"{name}/cart"
    watch = on_a.WatchCart(svc.WatchCartRequest(name=cart_name), timeout=30)
    first = await asyncio.wait_for(watch.read(), 10)
    assert first.kind == r.CART_CHANGE_KIND_SNAPSHOT and first.etag == "0"

    changed = await on_b.AddCartLine(add(cart_name, item, 4, request_id=rid()))
    pushed = await asyncio.wait_for(watch.read(), 10)
    assert pushed.kind == r.CART_CHANGE_KIND_LINE_ADDED
    assert pushed.etag == changed.etag == pushed.cart.etag
    assert pushed.cart.lines[0].quantity == 4
    assert pushed.line_ids == [changed.lines[0].line_id]
    assert pushed.channel.channel == channel_pb2.CHANNEL_STORE_POS
    watch.cancel()


async def test_two_checkouts_racing_on_two_replicas_place_one_order(
    catalogue: Catalogue, customer, replica_b: RunningService
) -> None:
    item = await catalogue.item(2500, stock=10)
    name, on_a = customer()
    on_b = Caller(stub(replica_b), on_a.metadata[0][1].removeprefix("Bearer "), "mobile_app")
    cart_name = f"{name}/cart"
    ready = await on_a.AddCartLine(add(cart_name, item, 3, request_id=rid()))

    results = await asyncio.gather(
        on_a.Checkout(
            svc.CheckoutRequest(name=cart_name, etag=ready.etag, request_id=rid(), shipping_address=ADDRESS)
        ),
        on_b.Checkout(
            svc.CheckoutRequest(name=cart_name, etag=ready.etag, request_id=rid(), shipping_address=ADDRESS)
        ),
        return_exceptions=True,
    )
    orders = [x for x in results if isinstance(x, r.Order)]
    errors = [x for x in results if isinstance(x, grpc.aio.AioRpcError)]
    assert len(orders) == 1 and len(errors) == 1, results
    assert errors[0].code() == grpc.StatusCode.ABORTED
    listed = await on_a.ListOrders(svc.ListOrdersRequest(parent=name))
    assert [o.name for o in listed.orders] == [orders[0].name]
    level = await catalogue.level(catalogue.warehouse, item)
    assert (level.on_hand, level.reserved) == (10, 3)
    assert not (await on_a.GetCart(svc.GetCartRequest(name=cart_name))).lines


async def test_checkout_of_more_than_in_stock_names_the_line_and_leaves_stock_untouched(
    catalogue: Catalogue, customer
) -> None:
    plenty = await catalogue.item(1000, stock=20)
    scarce = await catalogue.item(1000, stock=0)
    await catalogue.receive(catalogue.store, scarce, 2)
    await catalogue.receive(catalogue.store, plenty, 5)
    name, api = customer()
    cart_name = f"{name}/cart"
    await api.AddCartLine(add(cart_name, plenty, 2, request_id=rid()))
    await api.AddCartLine(add(cart_name, plenty, 1, fulfillment=pickup(catalogue.store), request_id=rid()))
    cart = await api.AddCartLine(
        add(cart_name, scarce, 3, fulfillment=pickup(catalogue.store), request_id=rid())
    )
    short_line = next(line for line in cart.lines if line.item == scarce)
    before = [
        await catalogue.level(loc, it)
        for loc, it in [(catalogue.warehouse, plenty), (catalogue.store, plenty), (catalogue.store, scarce)]
    ]
    active_before = len(await catalogue.active_reservations())

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.Checkout(
            svc.CheckoutRequest(name=cart_name, etag=cart.etag, request_id=rid(), shipping_address=ADDRESS)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "INSUFFICIENT_STOCK"
    violations = found["PreconditionFailure"].violations
    assert [(v.type, v.subject) for v in violations] == [
        ("INSUFFICIENT_STOCK", f"lines[{short_line.line_id}]")
    ]
    assert scarce in violations[0].description and "available 2" in violations[0].description

    after = [
        await catalogue.level(loc, it)
        for loc, it in [(catalogue.warehouse, plenty), (catalogue.store, plenty), (catalogue.store, scarce)]
    ]
    assert [(lv.on_hand, lv.reserved) for lv in after] == [(lv.on_hand, lv.reserved) for lv in before]
    assert len(await catalogue.active_reservations()) == active_before
    unchanged = await api.GetCart(svc.GetCartRequest(name=cart_name))
    assert unchanged.etag == cart.etag and len(unchanged.lines) == 3
    assert not (await api.ListOrders(svc.ListOrdersRequest(parent=name))).orders
    assert reason(caught.value) == "INSUFFICIENT_STOCK"
