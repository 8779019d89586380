"""A customer erased by identity: the active cart and promotion uses are gone, orders stay as
bookkeeping records without the shipping address or device, and the receipt is issued once."""

from __future__ import annotations

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import events_pb2 as ev
from omni.identity.v1 import events_pb2 as identity_events
from omni.type.v1 import erasure_pb2
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.plugin import Infra
from tests.cart.conftest import ADDRESS, Catalogue, Events, add, rid


async def test_erasure_deletes_the_cart_and_strips_orders_of_personal_data(
    catalogue: Catalogue, customer, staff, events: Events, omni_infra: Infra
) -> None:
    item = await catalogue.item(1200, stock=10)
    name, api = customer("mobile_app")
    api.metadata = (*api.metadata, ("x-omni-device", "app-install-7"))
    other, other_api = customer("web")
    cart = await api.AddCartLine(add(f"{name}/cart", item, 2, request_id=rid()))
    order = await api.Checkout(
        svc.CheckoutRequest(name=f"{name}/cart", etag=cart.etag, request_id=rid(), shipping_address=ADDRESS)
    )
    assert order.shipping_address.locality == "Cluj" and order.channel.device == "app-install-7"
    await api.AddCartLine(add(f"{name}/cart", item, 1, request_id=rid()))  # a new active cart
    await other_api.AddCartLine(add(f"{other}/cart", item, 1, request_id=rid()))

    await publish_event(omni_infra.nats_url, identity_events.CustomerErasedEvent(customer=name))
    receipt = (
        await events.wait_for(ev.CustomerErasureProcessedEvent, lambda e: e.receipt.customer == name, 20)
    ).receipt
    assert receipt.state == erasure_pb2.ErasureReceipt.STATE_DONE and receipt.service == "cart"
    assert dict(receipt.erased_counts) == {"carts": 1, "promotion_uses": 0, "orders_pseudonymised": 1}

    admin = staff("admin")
    assert list((await admin.GetCart(svc.GetCartRequest(name=f"{name}/cart"))).lines) == []
    kept = await admin.GetOrder(svc.GetOrderRequest(name=order.name))
    assert not kept.HasField("shipping_address") and kept.channel.device == ""
    assert (kept.total, kept.state, list(kept.lines)) == (order.total, order.state, list(order.lines))
    assert len((await admin.GetCart(svc.GetCartRequest(name=f"{other}/cart"))).lines) == 1
