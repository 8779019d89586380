"""A customer erased by identity: their back-in-stock subscriptions go, their reservations keep the
stock but lose the position they were placed from, and the receipt is issued once."""

from __future__ import annotations

import uuid

from omni.identity.v1 import events_pb2 as identity_events
from omni.inventory.v1 import events_pb2 as ev
from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni.type.v1 import address_pb2, erasure_pb2
from omni_runtime.db.engine import Database
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.plugin import Infra
from tests.inventory.conftest import Api, eventually, outbox_events

RECEIPT = ev.CustomerErasureProcessedEvent


async def receipts_for(db: Database, customer: str) -> list[erasure_pb2.ErasureReceipt]:
    found = [RECEIPT.FromString(p).receipt for p in await outbox_events(db, RECEIPT.DESCRIPTOR.full_name)]
    return [r for r in found if r.customer == customer]


async def test_erasure_removes_subscriptions_and_positions_and_keeps_the_stock_held(
    api: Api, db: Database, omni_infra: Infra
) -> None:
    customer, other = f"customers/{uuid.uuid4().hex[:8]}", f"customers/{uuid.uuid4().hex[:8]}"
    item = await api.item()
    store = await api.store(lat=46.77, lng=23.59)
    await api.receive(store.name, item.name, 5)
    for who in (customer, other):
        await api.CreateStockSubscription(
            svc.CreateStockSubscriptionRequest(
                stock_subscription=res.StockSubscription(customer=who, item=item.name, location=""),
                request_id=str(uuid.uuid4()),
            )
        )
    here = address_pb2.GeoPoint(latitude=46.7712, longitude=23.6236)
    held = await api.reserve(
        (item.name, 2, ""),
        strategy=res.ALLOCATION_STRATEGY_NEAREST,
        near=here,
        pickup=True,
        owner=f"{customer}/cart",
    )
    kept = await api.reserve(
        (item.name, 1, ""),
        strategy=res.ALLOCATION_STRATEGY_NEAREST,
        near=here,
        pickup=True,
        owner=f"{other}/cart",
    )

    await publish_event(omni_infra.nats_url, identity_events.CustomerErasedEvent(customer=customer))

    async def receipted() -> bool:
        return bool(await receipts_for(db, customer))

    await eventually(receipted, 20)
    [receipt] = await receipts_for(db, customer)
    assert receipt.state == erasure_pb2.ErasureReceipt.STATE_DONE and receipt.service == "inventory"
    assert dict(receipt.erased_counts) == {"stock_subscriptions": 1, "reservation_positions": 1}

    reservation = await api.GetReservation(svc.GetReservationRequest(name=held.name))
    assert not reservation.HasField("near")  # the position is gone...
    assert reservation.state == res.RESERVATION_STATE_ACTIVE  # ...the stock is still held
    assert (await api.level(store.name, item.name)).reserved == 3
    untouched = await api.GetReservation(svc.GetReservationRequest(name=kept.name))
    assert untouched.near.latitude == here.latitude
    for who, expected in ((customer, 0), (other, 1)):
        listed = await api.ListStockSubscriptions(svc.ListStockSubscriptionsRequest(customer=who))
        assert len(listed.stock_subscriptions) == expected
