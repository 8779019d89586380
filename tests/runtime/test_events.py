"""Transactional outbox, JetStream relay and idempotent durable consumers, against real NATS."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from omni.probe.v1 import probe_pb2
from omni_runtime.db.engine import Database
from omni_runtime.db.migrate import upgrade_async
from omni_runtime.events.bus import EventBus, subject_for
from omni_runtime.events.consumer import Event, EventConsumer
from omni_runtime.events.outbox import Outbox
from omni_runtime.localinfra import EmbeddedNats, free_port
from omni_runtime.testing.plugin import Infra


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_async("probe", database_url)
    database = Database(database_url)
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE probe_effects (id serial PRIMARY KEY, value text NOT NULL)"))
    yield database
    await database.close()


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A NATS server this test may stop and restart (same port, same stream storage)."""
    server = EmbeddedNats(tmp_path / "js", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def bus(own_nats: EmbeddedNats) -> AsyncIterator[EventBus]:
    event_bus = EventBus(own_nats.url, name="test")
    await event_bus.start()
    await event_bus.wait_connected(10)
    yield event_bus
    await event_bus.close()


async def effects(db: Database, prefix: str) -> list[str]:
    async with db.transaction() as session:
        rows = await session.execute(
            text("SELECT value FROM probe_effects WHERE value LIKE :p ORDER BY id"), {"p": f"{prefix}%"}
        )
        return [r[0] for r in rows]


async def record_effect(session: AsyncSession, event: Event) -> None:
    value = event.decode(probe_pb2.ProbedEvent).value
    await session.execute(text("INSERT INTO probe_effects (value) VALUES (:v)"), {"v": value})


async def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


def test_subject_names_follow_the_convention() -> None:
    assert subject_for("omni.cart.v1.OrderPlacedEvent") == "omni.cart.order_placed"
    assert subject_for("omni.probe.v1.ProbedEvent") == "omni.probe.probed"
    with pytest.raises(ValueError, match="not an Omni event"):
        subject_for("google.rpc.Status")


async def test_rolled_back_transaction_emits_nothing(db: Database, bus: EventBus) -> None:
    outbox = Outbox("probe", db, bus)
    tag = f"rb-{uuid.uuid4().hex[:6]}-"
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await outbox.emit(session, probe_pb2.ProbedEvent(value=tag + "x"))
            raise RuntimeError("business rule failed after the event was emitted")
    async with db.transaction() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM omni_outbox WHERE payload = :p"),
            {"p": probe_pb2.ProbedEvent(value=tag + "x").SerializeToString()},
        )
    assert count == 0


async def test_event_committed_while_nats_is_down_is_published_once_nats_returns(
    db: Database, bus: EventBus, own_nats: EmbeddedNats
) -> None:
    tag = f"outage-{uuid.uuid4().hex[:6]}-"
    outbox = Outbox("probe", db, bus, poll_interval=0.2)
    consumer = EventConsumer(
        "probe", f"outage{uuid.uuid4().hex[:6]}", ["omni.probe.probed"], record_effect, db, bus
    )
    relay = asyncio.create_task(outbox.run())
    consuming = asyncio.create_task(consumer.run())
    try:
        # Prove the pipeline works, then cut NATS.
        async with db.transaction() as session:
            await outbox.emit(session, probe_pb2.ProbedEvent(value=tag + "before"))
        await wait_until(lambda: _has(db, tag, 1))
        own_nats.kill()
        for i in range(5):
            async with db.transaction() as session:  # commits succeed: the outbox is the database
                await outbox.emit(session, probe_pb2.ProbedEvent(value=f"{tag}during-{i}"))
        await asyncio.sleep(1.5)
        assert await effects(db, tag + "during") == []
        assert (REGISTRY.get_sample_value("omni_outbox_pending_events", {"service": "probe"}) or 0) >= 5
        own_nats.start()
        await wait_until(lambda: _has(db, tag, 6), timeout=30)
        assert await effects(db, tag + "during") == [f"{tag}during-{i}" for i in range(5)]
        await asyncio.sleep(0.5)
        assert len(await effects(db, tag)) == 6  # nothing handled twice
        async with db.transaction() as session:
            left = await session.scalar(text("SELECT count(*) FROM omni_outbox WHERE published_at IS NULL"))
        assert left == 0
    finally:
        relay.cancel()
        consuming.cancel()
        await asyncio.gather(relay, consuming, return_exceptions=True)


async def _has(db: Database, tag: str, n: int) -> bool:
    return len(await effects(db, tag)) >= n


async def test_redelivered_event_is_not_handled_twice(db: Database, bus: EventBus) -> None:
    """The first ack is lost (as when a pod dies after commit); JetStream redelivers; the inbox skips it."""
    tag = f"redeliver-{uuid.uuid4().hex[:6]}"
    consumer = EventConsumer(
        "probe",
        f"redeliver{uuid.uuid4().hex[:6]}",
        ["omni.probe.probed"],
        record_effect,
        db,
        bus,
        ack_wait=1.0,
    )
    deliveries: list[int] = []
    original_ack = Msg.ack

    async def lose_first_ack(msg: Msg) -> None:
        if msg.data == probe_pb2.ProbedEvent(value=tag).SerializeToString():
            deliveries.append(msg.metadata.num_delivered)
            if msg.metadata.num_delivered == 1:
                return  # the ack never reaches the server
        await original_ack(msg)

    outbox = Outbox("probe", db, bus)
    async with db.transaction() as session:
        await outbox.emit(session, probe_pb2.ProbedEvent(value=tag))
    await outbox.publish_pending()
    before = (
        REGISTRY.get_sample_value(
            "omni_consumer_handled_total",
            {"service": "probe", "consumer": consumer.name, "outcome": "duplicate"},
        )
        or 0.0
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Msg, "ack", lose_first_ack)
        task = asyncio.create_task(consumer.run())
        try:

            async def redelivered() -> bool:
                return len(deliveries) >= 2

            await wait_until(redelivered)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert deliveries[:2] == [1, 2]
    assert await effects(db, tag) == [tag]
    after = REGISTRY.get_sample_value(
        "omni_consumer_handled_total", {"service": "probe", "consumer": consumer.name, "outcome": "duplicate"}
    )
    assert after == before + 1


async def test_republished_event_id_is_dropped_by_jetstream(db: Database, bus: EventBus) -> None:
    """A relay that dies after publishing but before marking the row publishes again: JetStream drops it."""
    await bus.ensure_stream("probe")
    event_id = str(uuid.uuid4())
    payload = probe_pb2.ProbedEvent(value="dup").SerializeToString()
    first = await bus.js.publish("omni.probe.probed", payload, headers={"Nats-Msg-Id": event_id})
    second = await bus.js.publish("omni.probe.probed", payload, headers={"Nats-Msg-Id": event_id})
    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq


async def test_failing_handler_is_retried_and_its_partial_work_rolled_back(
    db: Database, bus: EventBus
) -> None:
    tag = f"retry-{uuid.uuid4().hex[:6]}"
    attempts = 0

    async def flaky(session: AsyncSession, event: Event) -> None:
        nonlocal attempts
        attempts += 1
        await record_effect(session, event)  # written, then rolled back on the failure below
        if attempts < 3:
            raise RuntimeError("downstream hiccup")

    consumer = EventConsumer(
        "probe", f"retry{uuid.uuid4().hex[:6]}", ["omni.probe.probed"], flaky, db, bus, backoff=(0.1,)
    )
    outbox = Outbox("probe", db, bus)
    async with db.transaction() as session:
        await outbox.emit(session, probe_pb2.ProbedEvent(value=tag))
    await outbox.publish_pending()
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: _has(db, tag, 1))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert attempts >= 3
    assert await effects(db, tag) == [tag]


async def test_batch_consumer_applies_a_fetch_in_one_transaction_and_isolates_a_bad_event(
    db: Database, bus: EventBus
) -> None:
    """Every new event of a fetch reaches the batch handler together; when the batch fails, its
    events are handled one by one, so only the bad one is retried."""
    tag = f"batch-{uuid.uuid4().hex[:6]}"
    batches: list[list[str]] = []

    async def apply(session: AsyncSession, events: list[Event]) -> None:
        values = [e.decode(probe_pb2.ProbedEvent).value for e in events]
        batches.append(values)
        for event in events:
            await record_effect(session, event)
        if any(v.endswith("-bad") for v in values) and len(values) > 1:
            raise RuntimeError("one bad event in the batch")

    consumer = EventConsumer(
        "probe",
        f"batch{uuid.uuid4().hex[:6]}",
        ["omni.probe.probed"],
        None,
        db,
        bus,
        batch_handler=apply,
        backoff=(0.1,),
        ack_wait=1.0,  # a cancelled run's outstanding pull may hold messages until then
    )
    outbox = Outbox("probe", db, bus)
    async with db.transaction() as session:
        for i in range(5):
            await outbox.emit(session, probe_pb2.ProbedEvent(value=f"{tag}-{i}"))
    await outbox.publish_pending()
    for count, bad in ((5, False), (7, True)):
        if bad:  # published while the consumer is stopped: the next fetch holds both
            async with db.transaction() as session:
                await outbox.emit(session, probe_pb2.ProbedEvent(value=f"{tag}-7"))
                await outbox.emit(session, probe_pb2.ProbedEvent(value=f"{tag}-8-bad"))
            await outbox.publish_pending()
        task = asyncio.create_task(consumer.run())
        try:
            await wait_until(lambda n=count: _has(db, tag, n))  # type: ignore[misc]

        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert batches[0] == [f"{tag}-{i}" for i in range(5)]  # applied together
    # However the two arrive (together, then one by one; or apart), each is applied once.
    assert [f"{tag}-8-bad"] in batches[1:]
    assert sorted(await effects(db, tag)) == sorted(
        [*(f"{tag}-{i}" for i in range(5)), f"{tag}-7", f"{tag}-8-bad"]
    )


async def test_trace_context_travels_with_the_event(db: Database, bus: EventBus) -> None:
    from opentelemetry import trace

    from omni_runtime import tracing

    tracing.configure_tracing("tests", "0")
    seen: list[str] = []

    async def capture(session: AsyncSession, event: Event) -> None:
        if event.decode(probe_pb2.ProbedEvent).value == "traced":
            seen.append(f"{trace.get_current_span().get_span_context().trace_id:032x}")

    outbox = Outbox("probe", db, bus)
    with tracing.tracer().start_as_current_span("producer") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
        async with db.transaction() as session:
            await outbox.emit(session, probe_pb2.ProbedEvent(value="traced"))
    await outbox.publish_pending()
    consumer = EventConsumer("probe", f"trace{uuid.uuid4().hex[:6]}", ["omni.probe.probed"], capture, db, bus)
    task = asyncio.create_task(consumer.run())
    try:

        async def got() -> bool:
            return bool(seen)

        await wait_until(got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen == [trace_id]


def test_infra_fixture_is_shared(omni_infra: Infra) -> None:
    assert omni_infra.postgres.proc is not None and omni_infra.postgres.proc.poll() is None


async def test_stop_requested_sees_a_cancellation_that_was_swallowed() -> None:
    """Python 3.11's wait_for can turn a cancellation into a TimeoutError; loops must still stop."""
    from omni_runtime.events.bus import stop_requested

    stopped: list[bool] = []

    async def loop() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):  # swallowed, as a racing wait_for does
                await asyncio.sleep(10)
            if stop_requested():
                stopped.append(True)
                return

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(task, 1)
    assert stopped == [True]
