"""Merging a guest's cart, live sync streams, abandonment and expiry: the cart following the
customer across channels and over time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import grpc
import nats
import pytest

from omni.cart.v1 import cart_service_pb2 as svc
from omni.cart.v1 import events_pb2 as ev
from omni.cart.v1 import resources_pb2 as r
from omni.identity.v1 import events_pb2 as identity_events
from omni.profile.v1 import events_pb2 as profile_events
from omni.profile.v1 import resources_pb2 as profile_r
from omni.type.v1 import channel_pb2
from omni_runtime.config import Settings
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.plugin import Infra
from omni_runtime.testing.services import RunningService
from tests.cart.conftest import (
    ADDRESS,
    Caller,
    Catalogue,
    Events,
    add,
    cart_replica,
    details,
    eventually,
    pickup,
    rid,
    stub,
    uid,
)


async def fails(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def units(cart: r.Cart) -> dict[tuple[str, str], int]:
    return {(ln.item, ln.fulfillment.pickup_store): ln.quantity for ln in cart.lines}


async def guest_and_customer(catalogue: Catalogue, make_token, cart: RunningService):  # type: ignore[no-untyped-def]
    a, b, c = await catalogue.item(100), await catalogue.item(200), await catalogue.item(300)
    guest = f"customers/{uid('g')}"
    member = f"customers/{uid('c')}"
    guest_token = make_token(guest, ["guest"])
    as_guest = Caller(stub(cart), guest_token, "web")
    as_member = Caller(stub(cart), make_token(member, ["customer"]), "mobile_app")
    await as_guest.AddCartLine(add(f"{guest}/cart", a, 2, request_id=rid()))
    await as_guest.AddCartLine(
        add(f"{guest}/cart", b, 1, fulfillment=pickup(catalogue.store), request_id=rid())
    )
    await as_member.AddCartLine(add(f"{member}/cart", a, 3, request_id=rid()))
    await as_member.AddCartLine(add(f"{member}/cart", c, 1, request_id=rid()))
    return (a, b, c), guest, member, guest_token, as_guest, as_member


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (r.MERGE_MODE_SUM_QUANTITIES, {"a": 5, "b": 1, "c": 1}),
        (r.MERGE_MODE_KEEP_LARGER, {"a": 3, "b": 1, "c": 1}),
        (r.MERGE_MODE_REPLACE, {"a": 2, "b": 1}),
    ],
)
async def test_merge_modes_at_login(
    catalogue: Catalogue,
    make_token,
    cart: RunningService,
    events: Events,
    mode: int,
    expected: dict[str, int],
) -> None:
    (a, b, c), guest, member, guest_token, as_guest, as_member = await guest_and_customer(
        catalogue, make_token, cart
    )
    merged = await as_member.MergeCarts(
        svc.MergeCartsRequest(
            name=f"{member}/cart",
            source_cart=f"{guest}/cart",
            mode=mode,
            source_guest_token=guest_token,
            request_id=rid(),
        )
    )
    keys = {"a": (a, ""), "b": (b, catalogue.store), "c": (c, "")}
    assert units(merged) == {keys[k]: q for k, q in expected.items()}
    assert not (await as_guest.GetCart(svc.GetCartRequest(name=f"{guest}/cart"))).lines
    event = await events.wait_for(ev.CartsMergedEvent, lambda e: e.target_cart == f"{member}/cart")
    assert (
        event.source_cart == f"{guest}/cart"
        and event.merged_line_count == 2
        and event.target_etag == merged.etag
    )

    def merged_updates() -> list[ev.CartUpdatedEvent]:
        return [
            e
            for e in events.of(ev.CartUpdatedEvent)
            if e.kind == r.CART_CHANGE_KIND_MERGED and e.cart in (f"{member}/cart", f"{guest}/cart")
        ]

    await eventually(lambda: asyncio.sleep(0, result=len(merged_updates()) == 2))
    assert {e.cart for e in merged_updates()} == {f"{member}/cart", f"{guest}/cart"}


async def test_merge_needs_proof_of_the_guest_session(
    catalogue: Catalogue, make_token, cart: RunningService
) -> None:
    _, guest, member, _, _, as_member = await guest_and_customer(catalogue, make_token, cart)
    request = svc.MergeCartsRequest(
        name=f"{member}/cart", source_cart=f"{guest}/cart", mode=r.MERGE_MODE_SUM_QUANTITIES
    )
    error = await fails(as_member.MergeCarts(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert details(error)["BadRequest"].field_violations[0].field == "source_guest_token"
    someone_else = make_token(f"customers/{uid('g')}", ["guest"])
    request.source_guest_token = someone_else
    await fails(as_member.MergeCarts(request), grpc.StatusCode.PERMISSION_DENIED)
    request.source_guest_token = make_token(guest, ["customer"])
    await fails(as_member.MergeCarts(request), grpc.StatusCode.PERMISSION_DENIED)
    request.source_guest_token = "not-a-token"
    await fails(as_member.MergeCarts(request), grpc.StatusCode.PERMISSION_DENIED)


async def test_merge_is_deterministic_while_both_carts_change(
    catalogue: Catalogue, make_token, cart: RunningService
) -> None:
    (a, _, c), guest, member, guest_token, as_guest, as_member = await guest_and_customer(
        catalogue, make_token, cart
    )
    before = (await as_guest.GetCart(svc.GetCartRequest(name=f"{guest}/cart"))).item_count
    before += (await as_member.GetCart(svc.GetCartRequest(name=f"{member}/cart"))).item_count
    merge = as_member.MergeCarts(
        svc.MergeCartsRequest(
            name=f"{member}/cart",
            source_cart=f"{guest}/cart",
            mode=r.MERGE_MODE_SUM_QUANTITIES,
            source_guest_token=guest_token,
            request_id=rid(),
        )
    )
    edits = [as_guest.AddCartLine(add(f"{guest}/cart", a, 1, request_id=rid())) for _ in range(4)]
    edits += [as_member.AddCartLine(add(f"{member}/cart", c, 1, request_id=rid())) for _ in range(4)]
    results = await asyncio.gather(merge, *edits)
    assert all(isinstance(x, r.Cart) for x in results)
    target = await as_member.GetCart(svc.GetCartRequest(name=f"{member}/cart"))
    source = await as_guest.GetCart(svc.GetCartRequest(name=f"{guest}/cart"))
    # Nothing lost, nothing counted twice: every unit is in exactly one cart.
    assert target.item_count + source.item_count == before + 8
    # Whatever reached the guest cart after the merge stays there; everything before moved.
    assert all(ln.item == a for ln in source.lines)


async def test_a_guest_upgraded_event_merges_the_guest_cart(
    catalogue: Catalogue, make_token, cart: RunningService, omni_infra: Infra
) -> None:
    (a, b, c), guest, member, _, as_guest, as_member = await guest_and_customer(catalogue, make_token, cart)
    event = identity_events.GuestUpgradedEvent(
        guest=guest,
        customer=member,
        outcome=identity_events.GuestUpgradedEvent.OUTCOME_MERGED,
        channel=channel_pb2.ChannelContext(channel=channel_pb2.CHANNEL_MOBILE_APP),
    )
    nc = await nats.connect(omni_infra.nats_url)
    try:
        js = nc.jetstream()
        event_id = str(uuid.uuid4())
        headers = {"Nats-Msg-Id": event_id, "Omni-Event-Type": "omni.identity.v1.GuestUpgradedEvent"}
        await js.publish("omni.identity.guest_upgraded", event.SerializeToString(), headers=headers)

        async def merged() -> bool:
            return units(await as_member.GetCart(svc.GetCartRequest(name=f"{member}/cart"))) == {
                (a, ""): 5,
                (c, ""): 1,
                (b, catalogue.store): 1,
            }

        await eventually(merged, 15)
        merged_cart = await as_member.GetCart(svc.GetCartRequest(name=f"{member}/cart"))
        assert merged_cart.last_channel.channel == channel_pb2.CHANNEL_MOBILE_APP
        # A redelivery of the same event changes nothing.
        await js.publish("omni.identity.guest_upgraded", event.SerializeToString(), headers=headers)
        await asyncio.sleep(0.5)
        assert (await as_member.GetCart(svc.GetCartRequest(name=f"{member}/cart"))).etag == merged_cart.etag
    finally:
        await nc.close()
    assert not (await as_guest.GetCart(svc.GetCartRequest(name=f"{guest}/cart"))).lines


async def test_profiles_merged_as_duplicates_merge_their_carts(
    catalogue: Catalogue, make_token, cart: RunningService, omni_infra: Infra
) -> None:
    """Profile's ProfilesMergedEvent (DUPLICATE) merges the carts; GUEST_LOGIN merges are left to
    guest_upgraded (published first here, so it is applied before the DUPLICATE one)."""
    (a, b, c), source, target, _, as_source, as_target = await guest_and_customer(catalogue, make_token, cart)
    _, other_guest, other_member, _, as_other_guest, _ = await guest_and_customer(catalogue, make_token, cart)

    def merged_event(src: str, dst: str, reason: int) -> profile_events.ProfilesMergedEvent:
        return profile_events.ProfilesMergedEvent(
            source_customer=src,
            source_profile=f"{src}/profile",
            target_customer=dst,
            target_profile=f"{dst}/profile",
            reason=reason,  # type: ignore[arg-type]
        )

    await publish_event(
        omni_infra.nats_url, merged_event(other_guest, other_member, profile_r.MERGE_REASON_GUEST_LOGIN)
    )
    duplicate = merged_event(source, target, profile_r.MERGE_REASON_DUPLICATE)
    event_id = await publish_event(omni_infra.nats_url, duplicate)

    async def merged() -> bool:
        return units(await as_target.GetCart(svc.GetCartRequest(name=f"{target}/cart"))) == {
            (a, ""): 5,
            (c, ""): 1,
            (b, catalogue.store): 1,
        }

    await eventually(merged, 15)
    assert not (await as_source.GetCart(svc.GetCartRequest(name=f"{source}/cart"))).lines
    assert len((await as_other_guest.GetCart(svc.GetCartRequest(name=f"{other_guest}/cart"))).lines) == 2
    # Redeliveries (one past the inbox) merge an empty cart: nothing changes. The other pair's
    # DUPLICATE merge, published after them, marks when they have been applied.
    etag = (await as_target.GetCart(svc.GetCartRequest(name=f"{target}/cart"))).etag
    await publish_event(omni_infra.nats_url, duplicate, event_id=str(uuid.uuid4()))
    await publish_event(omni_infra.nats_url, duplicate, event_id=event_id)
    await publish_event(
        omni_infra.nats_url, merged_event(other_guest, other_member, profile_r.MERGE_REASON_DUPLICATE)
    )

    async def marker_applied() -> bool:
        return not (await as_other_guest.GetCart(svc.GetCartRequest(name=f"{other_guest}/cart"))).lines

    await eventually(marker_applied, 15)
    assert (await as_target.GetCart(svc.GetCartRequest(name=f"{target}/cart"))).etag == etag


async def test_watch_resumes_from_an_etag(catalogue: Catalogue, customer) -> None:
    item = await catalogue.item(100)
    name, api = customer()
    cart_name = f"{name}/cart"
    first = await api.AddCartLine(add(cart_name, item, 1, request_id=rid()))
    # Reconnecting with the current etag: no snapshot, the next message is the next change.
    current = api.WatchCart(svc.WatchCartRequest(name=cart_name, since_etag=first.etag), timeout=30)
    stale = api.WatchCart(svc.WatchCartRequest(name=cart_name, since_etag="0"), timeout=30)
    snapshot = await asyncio.wait_for(stale.read(), 10)
    assert snapshot.kind == r.CART_CHANGE_KIND_SNAPSHOT and snapshot.etag == first.etag
    second = await api.AddCartLine(add(cart_name, item, 1, request_id=rid()))
    for call in (current, stale):
        change = await asyncio.wait_for(call.read(), 10)
        assert (change.kind, change.etag, change.cart.lines[0].quantity) == (
            r.CART_CHANGE_KIND_LINE_ADDED,
            second.etag,
            2,
        )
        call.cancel()


async def test_streams_end_with_ok_when_the_server_stops(
    catalogue: Catalogue, cart_settings: Callable[..., Settings], key_source, make_token
) -> None:
    async with cart_replica(cart_settings(), key_source, make_token) as replica:
        name = f"customers/{uid('c')}"
        api = Caller(stub(replica), make_token(name, ["customer"]))
        call = api.WatchCart(svc.WatchCartRequest(name=f"{name}/cart"), timeout=60)
        assert (await asyncio.wait_for(call.read(), 10)).kind == r.CART_CHANGE_KIND_SNAPSHOT
        started = time.monotonic()
        await replica.host.stop(grace=5)
        assert time.monotonic() - started < 3, (
            "open streams must not hold shutdown for the whole grace period"
        )
        assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_abandoned_carts_are_reported_once_per_idle_period(
    catalogue: Catalogue, cart_settings: Callable[..., Settings], key_source, make_token, events: Events
) -> None:
    item = await catalogue.item(100)
    settings = cart_settings(OMNI_CART_ABANDON_AFTER_SECONDS="0.5", OMNI_CART_SWEEP_INTERVAL_SECONDS="0.1")
    async with cart_replica(settings, key_source, make_token) as replica:
        name = f"customers/{uid('c')}"
        api = Caller(stub(replica), make_token(name, ["customer"]), "web")
        cart = await api.AddCartLine(add(f"{name}/cart", item, 2, request_id=rid()))
        found = await events.wait_for(ev.CartAbandonedEvent, lambda e: e.cart == f"{name}/cart")
        assert found.customer == name and found.snapshot.etag == cart.etag
        assert found.last_channel.channel == channel_pb2.CHANNEL_WEB
        await asyncio.sleep(1.0)
        assert len([e for e in events.of(ev.CartAbandonedEvent) if e.cart == f"{name}/cart"]) == 1
        # A change starts a new idle period.
        await api.AddCartLine(add(f"{name}/cart", item, 1, request_id=rid()))
        await eventually(
            lambda: asyncio.sleep(
                0, result=len([e for e in events.of(ev.CartAbandonedEvent) if e.cart == f"{name}/cart"]) == 2
            ),
            10,
        )


async def test_an_uncollected_pickup_is_cancelled_when_its_reservation_expires(
    catalogue: Catalogue, cart_settings: Callable[..., Settings], key_source, make_token, events: Events
) -> None:
    item = await catalogue.item(100, stock=0)
    await catalogue.receive(catalogue.store, item, 3)
    async with cart_replica(
        cart_settings(OMNI_CART_RESERVATION_TTL_SECONDS="1"), key_source, make_token
    ) as replica:
        name = f"customers/{uid('c')}"
        api = Caller(stub(replica), make_token(name, ["customer"]))
        cart = await api.AddCartLine(
            add(f"{name}/cart", item, 2, fulfillment=pickup(catalogue.store), request_id=rid())
        )
        order = await api.Checkout(
            svc.CheckoutRequest(
                name=f"{name}/cart", etag=cart.etag, request_id=rid(), shipping_address=ADDRESS
            )
        )
        cancelled = await events.wait_for(
            ev.OrderCancelledEvent, lambda e: e.order.name == order.name, timeout=15
        )
        assert cancelled.automatic and cancelled.order.state == r.ORDER_STATE_CANCELLED
        current = await api.GetOrder(svc.GetOrderRequest(name=order.name))
        assert current.fulfillment_groups[0].state == r.FULFILLMENT_GROUP_STATE_CANCELLED
        assert (await catalogue.level(catalogue.store, item)).reserved == 0
