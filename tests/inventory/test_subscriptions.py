"""Back-in-stock subscriptions: ownership, lifecycle, and firing exactly once."""

from __future__ import annotations

import grpc

from omni.inventory.v1 import events_pb2
from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.db.engine import Database
from tests.inventory.conftest import Api, outbox_events, reason, rid, rpc_error, uid, violations

WEB = (("x-omni-channel", "web"),)


def _subscribe(customer: str, item: str, location: str = "") -> svc.CreateStockSubscriptionRequest:
    return svc.CreateStockSubscriptionRequest(
        stock_subscription=res.StockSubscription(customer=customer, item=item, location=location),
        request_id=rid(),
    )


async def test_customers_manage_their_own_subscriptions(as_role, api: Api) -> None:  # type: ignore[no-untyped-def]
    item, store = await api.item(), await api.store()
    me = f"customers/{uid('c')}"
    customer = as_role(me, "customer")
    created = await customer.CreateStockSubscription(_subscribe(me, item.name, store.name), metadata=WEB)
    assert (created.state, created.customer, created.location) == (
        res.STOCK_SUBSCRIPTION_STATE_ACTIVE,
        me,
        store.name,
    )
    assert created.channel.channel == 1  # CHANNEL_WEB
    # A second tap on "notify me" returns the same subscription.
    assert (
        await customer.CreateStockSubscription(_subscribe(me, item.name, store.name))
    ).name == created.name
    anywhere = await customer.CreateStockSubscription(_subscribe(me, item.name))
    assert anywhere.name != created.name and anywhere.location == ""

    got = await customer.GetStockSubscription(svc.GetStockSubscriptionRequest(name=created.name, customer=me))
    assert got == created
    listed = await customer.ListStockSubscriptions(svc.ListStockSubscriptionsRequest(customer=me))
    assert [s.name for s in listed.stock_subscriptions] == [anywhere.name, created.name]
    at_store = await customer.ListStockSubscriptions(
        svc.ListStockSubscriptionsRequest(
            customer=me, filter=f'location = "{store.name}"', order_by="create_time"
        )
    )
    assert [s.name for s in at_store.stock_subscriptions] == [created.name]

    cancelled = await customer.DeleteStockSubscription(
        svc.DeleteStockSubscriptionRequest(name=created.name, customer=me)
    )
    assert cancelled.state == res.STOCK_SUBSCRIPTION_STATE_CANCELLED and cancelled.HasField("end_time")
    assert (
        await customer.DeleteStockSubscription(
            svc.DeleteStockSubscriptionRequest(name=created.name, customer=me)
        )
        == cancelled
    )
    active = await customer.ListStockSubscriptions(
        svc.ListStockSubscriptionsRequest(customer=me, filter="state = STOCK_SUBSCRIPTION_STATE_ACTIVE")
    )
    assert [s.name for s in active.stock_subscriptions] == [anywhere.name]

    # Another customer neither sees nor cancels it, and cannot subscribe in someone else's name.
    other_id = f"customers/{uid('c')}"
    other = as_role(other_id, "customer")
    hidden = await rpc_error(
        other.GetStockSubscription(svc.GetStockSubscriptionRequest(name=anywhere.name, customer=other_id))
    )
    assert hidden.code() is grpc.StatusCode.NOT_FOUND
    hidden = await rpc_error(
        other.DeleteStockSubscription(
            svc.DeleteStockSubscriptionRequest(name=anywhere.name, customer=other_id)
        )
    )
    assert hidden.code() is grpc.StatusCode.NOT_FOUND
    assert reason(await rpc_error(other.CreateStockSubscription(_subscribe(me, item.name)))) == "NOT_OWNER"
    assert (
        reason(
            await rpc_error(other.GetStockSubscription(svc.GetStockSubscriptionRequest(name=anywhere.name)))
        )
        == "NOT_OWNER"
    )
    # Staff may leave the customer empty.
    assert (
        await api.GetStockSubscription(svc.GetStockSubscriptionRequest(name=anywhere.name))
    ).name == anywhere.name


async def test_subscription_errors(api: Api) -> None:
    inactive, store = await api.item(active=False), await api.store()
    err = await rpc_error(api.CreateStockSubscription(_subscribe("customers/c1", inactive.name)))
    assert (err.code(), reason(err)) == (grpc.StatusCode.FAILED_PRECONDITION, "ITEM_INACTIVE")
    missing = await rpc_error(
        api.CreateStockSubscription(_subscribe("customers/c1", "items/NOPE", store.name))
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    bad = await rpc_error(api.CreateStockSubscription(_subscribe("staffMembers/s1", "sku", "store")))
    assert violations(bad) == {
        "stock_subscription.customer",
        "stock_subscription.item",
        "stock_subscription.location",
    }
    assert violations(
        await rpc_error(api.GetStockSubscription(svc.GetStockSubscriptionRequest(name="x", customer="y")))
    ) == {"name", "customer"}
    assert violations(
        await rpc_error(api.ListStockSubscriptions(svc.ListStockSubscriptionsRequest(filter="customer = 1")))
    ) == {"filter"}
    gone = await rpc_error(
        api.DeleteStockSubscription(svc.DeleteStockSubscriptionRequest(name="stockSubscriptions/none"))
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND


async def test_subscriptions_fire_once_when_stock_comes_back(api: Api, db: Database) -> None:
    item = await api.item(title="Red kettle")
    store = await api.store(display_name="Cluj Centre")
    elsewhere = await api.store()
    warehouse_only = await api.warehouse()  # ships: satisfies "anywhere" subscriptions too
    c1, c2, c3, c4 = (f"customers/{uid('c')}" for _ in range(4))
    at_store = await api.CreateStockSubscription(_subscribe(c1, item.name, store.name), metadata=WEB)
    anywhere = await api.CreateStockSubscription(_subscribe(c2, item.name))
    other_store = await api.CreateStockSubscription(_subscribe(c3, item.name, elsewhere.name))

    await api.receive(store.name, item.name, 2)
    fired = [
        events_pb2.StockSubscriptionFiredEvent.FromString(p)
        for p in await outbox_events(db, "omni.inventory.v1.StockSubscriptionFiredEvent")
    ]
    mine = {e.stock_subscription: e for e in fired if e.item == item.name}
    assert set(mine) == {at_store.name, anywhere.name}
    event = mine[at_store.name]
    assert (
        event.customer,
        event.item_title,
        event.location,
        event.location_display_name,
        event.available,
    ) == (
        c1,
        "Red kettle",
        store.name,
        "Cluj Centre",
        2,
    )
    assert event.subscribed_channel.channel == 1
    back = [
        events_pb2.BackInStockEvent.FromString(p)
        for p in await outbox_events(db, "omni.inventory.v1.BackInStockEvent")
    ]
    assert [(e.location, e.fired_subscription_count) for e in back if e.item == item.name] == [
        (store.name, 2)
    ]
    state = await api.GetStockSubscription(svc.GetStockSubscriptionRequest(name=at_store.name))
    assert (state.state, state.fired_location) == (res.STOCK_SUBSCRIPTION_STATE_FIRED, store.name)
    waiting = await api.GetStockSubscription(svc.GetStockSubscriptionRequest(name=other_store.name))
    assert waiting.state == res.STOCK_SUBSCRIPTION_STATE_ACTIVE

    # Sold out and back again: the fired subscriptions stay fired; a new one fires, this time
    # because a released reservation gave the stock back.
    reservation = await api.reserve((item.name, 2, store.name))
    later = await api.CreateStockSubscription(_subscribe(c4, item.name, store.name))
    await api.ReleaseReservation(svc.ReleaseReservationRequest(name=reservation.name))
    await api.receive(warehouse_only.name, item.name, 1)
    fired = [
        events_pb2.StockSubscriptionFiredEvent.FromString(p)
        for p in await outbox_events(db, "omni.inventory.v1.StockSubscriptionFiredEvent")
    ]
    names = [e.stock_subscription for e in fired if e.item == item.name]
    assert sorted(names) == sorted([at_store.name, anywhere.name, later.name])
