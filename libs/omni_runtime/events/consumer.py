"""Durable, idempotent JetStream consumers.

A handler runs inside a database transaction that also records the event id in
``omni_processed_events``; the message is acknowledged only after that transaction commits.
A batch handler (``BatchHandler``) gets every new event of one fetch in one transaction, for
consumers whose cost is dominated by per-transaction overhead (a timeline fed by every
service); if that transaction fails, the batch's events are handled one by one, so one bad
event is retried (and finally terminated) alone instead of holding back the others.
A redelivered event (the ack was lost, or another replica raced) finds its id already there
and is acknowledged without running the handler again. A handler that fails is retried with
backoff up to ``max_deliver`` times, then terminated and logged for an operator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime import metrics, tracing
from omni_runtime.db.engine import Database
from omni_runtime.db.schema import processed_events
from omni_runtime.events.bus import EventBus, service_of_subject, stop_requested
from omni_runtime.events.outbox import EVENT_TYPE_HEADER, MSG_ID_HEADER

log = logging.getLogger("omni.consumer")

M = TypeVar("M", bound=Message)
CONSUMER_OUTCOMES = ("processed", "duplicate", "failed")


@dataclass(frozen=True, slots=True)
class Event:
    """A received event: its id, subject, protobuf type name and raw payload."""

    id: str
    subject: str
    event_type: str
    payload: bytes
    headers: dict[str, str]
    delivery: int

    def decode(self, message_type: type[M]) -> M:
        message = message_type()
        message.ParseFromString(self.payload)
        return message


Handler = Callable[[AsyncSession, Event], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, list[Event]], Awaitable[None]]


class EventConsumer:
    """One durable pull consumer of one producer's stream, filtered to some subjects."""

    def __init__(
        self,
        service: str,
        name: str,
        subjects: list[str],
        handler: Handler | None,
        db: Database,
        bus: EventBus,
        *,
        batch_handler: BatchHandler | None = None,
        batch: int = 32,
        max_deliver: int = 10,
        ack_wait: float = 30.0,
        backoff: tuple[float, ...] = (0.2, 1.0, 5.0, 15.0, 30.0),
    ) -> None:
        producers = {service_of_subject(s) for s in subjects}
        if len(producers) != 1:
            raise ValueError("a consumer reads one producer's stream; split subjects across consumers")
        self.producer = producers.pop()
        self.service = service
        self.name = name
        self.durable = f"{service}-{name}"
        self.subjects = subjects
        if (handler is None) == (batch_handler is None):
            raise ValueError("give a consumer either a handler or a batch handler")
        self.batch_handler = batch_handler
        if handler is None and batch_handler is not None:
            one_batch = batch_handler

            async def handler(session: AsyncSession, event: Event) -> None:
                await one_batch(session, [event])

        assert handler is not None
        self.handler: Handler = handler
        self.db = db
        self.bus = bus
        self.batch = batch
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self.backoff = backoff
        metrics.initialise(
            metrics.CONSUMER_HANDLED, ((service, name, outcome) for outcome in CONSUMER_OUTCOMES)
        )
        metrics.initialise(metrics.CONSUMER_HANDLING_SECONDS, [(service, name)])
        metrics.initialise(metrics.CONSUMER_PENDING, [(service, name)])

    async def _subscribe(self) -> object:
        stream = await self.bus.ensure_stream(self.producer)
        config = api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            filter_subjects=self.subjects,
            max_ack_pending=1000,
        )
        # add_consumer creates or updates, so a changed subject list takes effect on deploy.
        await self.bus.js.add_consumer(stream, config=config)
        return await self.bus.js.pull_subscribe_bind(durable=self.durable, stream=stream)

    async def run(self) -> None:
        """Fetch and handle events until cancelled; survives NATS and database outages."""
        sub = None
        last_lag = 0.0
        while True:
            try:
                if sub is None:
                    await self.bus.wait_connected()
                    sub = await self._subscribe()
                try:
                    messages = await sub.fetch(self.batch, timeout=1.0)  # type: ignore[attr-defined]
                except (NatsTimeoutError, TimeoutError):  # nothing to fetch (nats-py raises either)
                    if stop_requested():
                        raise asyncio.CancelledError from None
                    messages = []
                if self.batch_handler is not None and len(messages) > 1:
                    await self.handle_batch(messages)
                else:
                    for msg in messages:
                        await self.handle(msg)
                if time.monotonic() - last_lag > 5.0:
                    info = await sub.consumer_info()  # type: ignore[attr-defined]
                    metrics.CONSUMER_PENDING.labels(self.service, self.name).set(info.num_pending or 0)
                    last_lag = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer %s paused: %r", self.durable, exc)
                sub = None
                await asyncio.sleep(1.0)

    @staticmethod
    def _event(msg: Msg) -> Event:
        headers = dict(msg.headers or {})
        return Event(
            id=headers.get(MSG_ID_HEADER, ""),
            subject=msg.subject,
            event_type=headers.get(EVENT_TYPE_HEADER, ""),
            payload=msg.data,
            headers=headers,
            delivery=msg.metadata.num_delivered if msg.metadata else 1,
        )

    async def handle_batch(self, messages: list[Msg]) -> None:
        """Handle a fetch in one transaction; on failure, each message alone (see module doc)."""
        assert self.batch_handler is not None
        events = [self._event(msg) for msg in messages]
        start = time.perf_counter()
        try:
            if any(not e.id for e in events):
                raise ValueError(f"an event has no {MSG_ID_HEADER} header")
            with tracing.tracer("omni.events").start_as_current_span(
                f"{self.durable} process batch",
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "nats", "messaging.batch.message_count": len(events)},
            ):
                fresh = await self._process_batch(events)
        except Exception as exc:
            log.warning(
                "batch of %d events on %s failed (%r); handling them one by one",
                len(events),
                self.durable,
                exc,
            )
            for msg in messages:
                await self.handle(msg)
            return
        for msg in messages:
            await msg.ack()
        elapsed = time.perf_counter() - start
        metrics.CONSUMER_HANDLED.labels(self.service, self.name, "processed").inc(fresh)
        if fresh < len(events):
            metrics.CONSUMER_HANDLED.labels(self.service, self.name, "duplicate").inc(len(events) - fresh)
        metrics.CONSUMER_HANDLING_SECONDS.labels(self.service, self.name).observe(elapsed)

    async def _process_batch(self, events: list[Event]) -> int:
        assert self.batch_handler is not None
        async with self.db.transaction() as session:
            ids = list(dict.fromkeys(e.id for e in events))
            inserted = await session.execute(
                insert(processed_events)
                .values([{"consumer": self.durable, "event_id": i} for i in ids])
                .on_conflict_do_nothing()
                .returning(processed_events.c.event_id)
            )
            new = {row.event_id for row in inserted}
            fresh: list[Event] = []
            for event in events:
                if event.id in new:
                    new.discard(event.id)  # a duplicate inside the fetch counts once
                    fresh.append(event)
            if fresh:
                await self.batch_handler(session, fresh)
        return len(fresh)

    async def handle(self, msg: Msg) -> None:
        event = self._event(msg)
        headers = event.headers
        delivered = event.delivery
        token = otel_context.attach(tracing.extract_from_headers(headers))  # type: ignore[arg-type]
        start = time.perf_counter()
        try:
            with tracing.tracer("omni.events").start_as_current_span(
                f"{msg.subject} process",
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.destination.name": msg.subject,
                    "messaging.message.id": event.id,
                    "messaging.consumer.group.name": self.durable,
                },
            ):
                outcome = await self._process(event)
            await msg.ack()
        except Exception as exc:
            outcome = "failed"
            if delivered >= self.max_deliver:
                log.error(
                    "event %s on %s failed %d times; giving up",
                    event.id,
                    msg.subject,
                    delivered,
                    exc_info=exc,
                    extra={"event_id": event.id, "consumer": self.durable},
                )
                await msg.term()
            else:
                delay = self.backoff[min(delivered - 1, len(self.backoff) - 1)]
                log.warning(
                    "event %s on %s failed (delivery %d), retrying in %.1fs: %s",
                    event.id,
                    msg.subject,
                    delivered,
                    delay,
                    exc,
                    extra={"event_id": event.id, "consumer": self.durable},
                )
                await msg.nak(delay=delay)
        finally:
            otel_context.detach(token)
        metrics.CONSUMER_HANDLED.labels(self.service, self.name, outcome).inc()
        metrics.CONSUMER_HANDLING_SECONDS.labels(self.service, self.name).observe(time.perf_counter() - start)

    async def _process(self, event: Event) -> str:
        if not event.id:
            raise ValueError(f"event on {event.subject} has no {MSG_ID_HEADER} header")
        async with self.db.transaction() as session:
            inserted = await session.execute(
                insert(processed_events)
                .values(consumer=self.durable, event_id=event.id)
                .on_conflict_do_nothing()
                .returning(processed_events.c.event_id)
            )
            if inserted.first() is None:
                return "duplicate"
            await self.handler(session, event)
        return "processed"
