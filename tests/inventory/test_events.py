"""Inventory events leave through the outbox relay and arrive on JetStream under their subjects."""

from __future__ import annotations

import uuid
from typing import Any

import nats
from nats.js import api as js_api
from sqlalchemy import text

from omni.inventory.v1 import events_pb2
from omni.inventory.v1 import inventory_service_pb2 as svc
from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.db.engine import Database
from omni_runtime.testing.plugin import Infra
from tests.inventory.conftest import Api, eventually


async def test_reservation_and_stock_events_are_published_to_jetstream(
    api: Api, db: Database, omni_infra: Infra
) -> None:
    item, store = await api.item(), await api.store()
    await api.receive(store.name, item.name, 1)
    reservation = await api.reserve((item.name, 1, store.name), owner="customers/c7/cart")
    await api.CommitReservation(svc.CommitReservationRequest(name=reservation.name))

    async def relayed() -> bool:
        async with db.transaction() as session:
            pending = await session.scalar(
                text("SELECT count(*) FROM omni_outbox WHERE published_at IS NULL")
            )
        return pending == 0

    await eventually(relayed, timeout=15)
    nc = await nats.connect(omni_infra.nats_url)
    try:
        js = nc.jetstream()
        wanted = {
            "omni.inventory.reservation_created": events_pb2.ReservationCreatedEvent,
            "omni.inventory.reservation_committed": events_pb2.ReservationCommittedEvent,
            "omni.inventory.out_of_stock": events_pb2.OutOfStockEvent,
            "omni.inventory.stock_changed": events_pb2.StockChangedEvent,
        }
        found: dict[str, list[Any]] = {}
        for subject, kind in wanted.items():
            sub = await js.pull_subscribe(
                subject,
                durable=f"t{uuid.uuid4().hex[:8]}",
                stream="OMNI_INVENTORY",
                config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
            )
            pending = (await sub.consumer_info()).num_pending
            messages = await sub.fetch(pending, timeout=5) if pending else []
            for msg in messages:
                assert msg.headers is not None
                assert msg.headers["Omni-Event-Type"] == kind.DESCRIPTOR.full_name
                assert msg.headers["Nats-Msg-Id"]
                found.setdefault(subject, []).append(kind.FromString(msg.data))
                await msg.ack()
    finally:
        await nc.close()

    created = [
        e for e in found["omni.inventory.reservation_created"] if e.reservation.name == reservation.name
    ]
    assert len(created) == 1 and created[0].reservation.owner == "customers/c7/cart"
    committed = [
        e for e in found["omni.inventory.reservation_committed"] if e.reservation.name == reservation.name
    ]
    assert [e.reservation.state for e in committed] == [res.RESERVATION_STATE_COMMITTED]
    level = f"{store.name}/stockLevels/{item.name[6:]}"
    assert [e.stock_level for e in found["omni.inventory.out_of_stock"]].count(level) == 1
    kinds = [e.kind for e in found["omni.inventory.stock_changed"] if e.stock_level == level]
    assert kinds == [
        res.MOVEMENT_KIND_RECEIPT,
        res.MOVEMENT_KIND_RESERVATION,
        res.MOVEMENT_KIND_RESERVATION_COMMIT,
    ]
