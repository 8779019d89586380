"""The erasure fan-out every service plugs into: identity's CustomerErasedEvent in, the service's
erase work and its receipt out, in one transaction, exactly once — against real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from omni.cart.v1 import events_pb2 as cart_events
from omni.identity.v1 import events_pb2 as identity_events
from omni.type.v1 import erasure_pb2
from omni_runtime.clients import PeerChannels
from omni_runtime.db.engine import Database
from omni_runtime.db.migrate import upgrade_async
from omni_runtime.events.bus import EventBus
from omni_runtime.events.erasure import consume_erasures
from omni_runtime.events.outbox import Outbox
from omni_runtime.server import Runtime
from omni_runtime.testing.events import publish_event
from omni_runtime.testing.plugin import Infra
from omni_runtime.testing.services import test_settings

Receipt = erasure_pb2.ErasureReceipt
COUNT_NOTES = text("SELECT count(*) FROM notes WHERE customer = :c")


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_async("probe", database_url)
    database = Database(database_url)
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE notes (customer text NOT NULL, body text NOT NULL)"))
    yield database
    await database.close()


@pytest.fixture(scope="module")
async def bus(omni_infra: Infra) -> AsyncIterator[EventBus]:
    event_bus = EventBus(omni_infra.nats_url, name="erasure-test")
    await event_bus.start()
    await event_bus.wait_connected(10)
    yield event_bus
    await event_bus.close()


def runtime_for(db: Database, bus: EventBus, infra: Infra) -> Runtime:
    settings = dataclasses.replace(
        test_settings("probe", database_url=db.url, nats_url=infra.nats_url),
        service=f"probe{uuid.uuid4().hex[:6]}",  # its own durable consumer per test
    )
    return Runtime(
        settings=settings, db=db, bus=bus, outbox=Outbox(settings.service, db, bus), peers=PeerChannels({})
    )


async def erase_notes(session: AsyncSession, customer: str) -> Mapping[str, int]:
    result = await session.execute(text("DELETE FROM notes WHERE customer = :c"), {"c": customer})
    return {"notes": result.rowcount}


async def publish_erased(bus: EventBus, customer: str, event_id: str | None = None) -> str:
    message = identity_events.CustomerErasedEvent(customer=customer, requested_by=customer)
    return await publish_event(bus.url, message, event_id=event_id)


async def receipts(db: Database, customer: str) -> list[Receipt]:
    async with db.transaction() as session:
        rows = await session.execute(
            text("SELECT payload FROM omni_outbox WHERE subject = 'omni.cart.customer_erasure_processed'")
        )
        found = [cart_events.CustomerErasureProcessedEvent.FromString(r[0]).receipt for r in rows]
    return [r for r in found if r.customer == customer]


async def wait_for_receipts(db: Database, customer: str, n: int) -> list[Receipt]:
    async with asyncio.timeout(20):
        while len(found := await receipts(db, customer)) < n:
            await asyncio.sleep(0.05)
    return found


async def run_consumers(runtime: Runtime) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(c.run()) for c in runtime.consumers]


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_erasure_runs_once_and_its_receipt_is_written_with_it(
    db: Database, bus: EventBus, omni_infra: Infra
) -> None:
    customer = f"customers/{uuid.uuid4().hex[:8]}"
    async with db.transaction() as session:
        for body in ("a", "b", "c"):
            await session.execute(text("INSERT INTO notes VALUES (:c, :b)"), {"c": customer, "b": body})
        await session.execute(text("INSERT INTO notes VALUES ('customers/other', 'kept')"))
    runtime = runtime_for(db, bus, omni_infra)
    consume_erasures(runtime, erase_notes, cart_events.CustomerErasureProcessedEvent)
    tasks = await run_consumers(runtime)
    try:
        await publish_erased(bus, customer)
        [done] = await wait_for_receipts(db, customer, 1)
        assert done.state == Receipt.STATE_DONE
        assert done.service == runtime.settings.service
        assert dict(done.erased_counts) == {"notes": 3}
        assert not done.failure_reason
        # The same event again (a redelivery, another replica) and a second erasure of the customer:
        # the first is skipped, the second finds nothing left and says so.
        await publish_erased(bus, customer, event_id=str(uuid.uuid4()))
        _, second = await wait_for_receipts(db, customer, 2)
        assert dict(second.erased_counts) == {"notes": 0}
        await asyncio.sleep(0.3)
        assert len(await receipts(db, customer)) == 2
        async with db.transaction() as session:
            left = await session.scalar(
                text("SELECT count(*) FROM notes WHERE customer = :c"), {"c": customer}
            )
            kept = await session.scalar(text("SELECT count(*) FROM notes WHERE customer = 'customers/other'"))
        assert (left, kept) == (0, 1)
    finally:
        await stop(tasks)


async def test_erasure_that_keeps_failing_leaves_nothing_half_done_and_a_failed_receipt(
    db: Database, bus: EventBus, omni_infra: Infra
) -> None:
    customer = f"customers/{uuid.uuid4().hex[:8]}"
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO notes VALUES (:c, 'x'), (:c, 'y')"), {"c": customer})
    attempts = 0

    async def half_then_fail(session: AsyncSession, name: str) -> Mapping[str, int]:
        nonlocal attempts
        attempts += name == customer  # the stream also replays the other tests' erasures
        await session.execute(text("DELETE FROM notes WHERE customer = :c AND body = 'x'"), {"c": name})
        raise RuntimeError("the attachment store is down (secret detail)")

    runtime = runtime_for(db, bus, omni_infra)
    consume_erasures(runtime, half_then_fail, cart_events.CustomerErasureProcessedEvent, max_deliver=2)
    tasks = await run_consumers(runtime)
    try:
        await publish_erased(bus, customer)
        [failed] = await wait_for_receipts(db, customer, 1)
        assert failed.state == Receipt.STATE_FAILED
        assert failed.failure_reason == "RuntimeError after 2 attempts"  # no detail of the exception leaks
        assert attempts == 2
        async with db.transaction() as session:
            left = await session.scalar(
                text("SELECT count(*) FROM notes WHERE customer = :c"), {"c": customer}
            )
        assert left == 2  # the half-done delete of each attempt was rolled back
    finally:
        await stop(tasks)
