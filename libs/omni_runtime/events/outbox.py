"""Transactional outbox and its relay to JetStream.

``Outbox.emit`` writes an event row in the caller's transaction, so an event exists if and
only if the state change it announces was committed. The relay publishes committed rows in
commit order with ``Nats-Msg-Id`` = event id: while NATS is down the rows wait (the backlog
shows in ``omni_outbox_pending_events``); if the relay dies between publishing and marking a
row, the re-publish is dropped by JetStream's duplicate window. Several replicas can relay at
once: rows are claimed with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import Table, delete, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni_runtime import metrics, tracing
from omni_runtime.db.engine import Database, defer_insert
from omni_runtime.db.schema import idempotency_keys, outbox, processed_events
from omni_runtime.events.bus import EventBus, service_of_subject, stop_requested, subject_for

log = logging.getLogger("omni.outbox")

EVENT_TYPE_HEADER = "Omni-Event-Type"
MSG_ID_HEADER = "Nats-Msg-Id"


class Outbox:
    """Writes events in the caller's transaction and relays them to JetStream in the background."""

    def __init__(
        self,
        service: str,
        db: Database,
        bus: EventBus,
        *,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        publish_timeout: float = 2.0,
        retention: timedelta = timedelta(days=1),
    ) -> None:
        self.service = service
        self.db = db
        self.bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self.retention = retention
        self._wake = asyncio.Event()
        for metric in (
            metrics.OUTBOX_PENDING,
            metrics.OUTBOX_OLDEST_AGE,
            metrics.OUTBOX_PUBLISHED,
            metrics.OUTBOX_PUBLISH_ERRORS,
        ):
            metrics.initialise(metric, [(service,)])

    async def emit(
        self, session: AsyncSession, message: Message, *, event_id: uuid.UUID | None = None
    ) -> uuid.UUID:
        """Record ``message`` (an ``…Event`` message) to publish once the transaction commits
        (written with the transaction's last statement, see ``emit_many``)."""
        return (await self.emit_many(session, [message], event_ids=[event_id or uuid.uuid4()]))[0]

    async def emit_many(
        self,
        session: AsyncSession,
        messages: Sequence[Message],
        *,
        event_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[uuid.UUID]:
        """Record several events, published in this order after the commit.

        The rows are written with the transaction's last statement (``defer_insert``): however
        many events a transaction emits, they cost no round trip of their own.
        """
        table, rows = self.rows(session, messages, event_ids=event_ids)
        defer_insert(session, table, rows)
        return [row["id"] for row in rows]

    def rows(
        self,
        session: AsyncSession,
        messages: Sequence[Message],
        *,
        event_ids: Sequence[uuid.UUID] | None = None,
    ) -> tuple[Table, list[dict[str, Any]]]:
        """The outbox rows of ``messages``, for a caller that inserts them together with rows of
        its own in one statement (``omni_runtime.db.bulk.insert_all``) in ``session``'s
        transaction; the relay is woken when it commits."""
        ids = list(event_ids) if event_ids is not None else [uuid.uuid4() for _ in messages]
        headers = tracing.inject_headers()
        rows = []
        for eid, message in zip(ids, messages, strict=True):
            full_name = message.DESCRIPTOR.full_name
            rows.append(
                {
                    "id": eid,
                    "subject": subject_for(full_name),
                    "event_type": full_name,
                    "payload": message.SerializeToString(),
                    "headers": headers,
                }
            )
        if rows and not session.info.get("omni_outbox_hooked"):
            session.info["omni_outbox_hooked"] = True
            event.listen(session.sync_session, "after_commit", self._after_commit, once=True)
        return outbox, rows

    def _after_commit(self, _session: object) -> None:
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch of committed events; returns how many were published."""
        js = self.bus.js
        published = 0
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(
                        outbox.c.id, outbox.c.subject, outbox.c.event_type, outbox.c.payload, outbox.c.headers
                    )
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.seq)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            await self.bus.ensure_stream(service_of_subject(rows[0].subject))
            done: list[uuid.UUID] = []
            failed: uuid.UUID | None = None
            for row in rows:
                headers = {
                    **(row.headers or {}),
                    MSG_ID_HEADER: str(row.id),
                    EVENT_TYPE_HEADER: row.event_type,
                }
                try:
                    await js.publish(row.subject, row.payload, timeout=self.publish_timeout, headers=headers)
                except Exception as exc:
                    metrics.OUTBOX_PUBLISH_ERRORS.labels(self.service).inc()
                    log.warning("publishing event %s to %s failed: %s", row.id, row.subject, exc)
                    failed = row.id
                    break  # keep commit order: later rows wait for this one
                done.append(row.id)
            if done:
                await session.execute(
                    update(outbox).where(outbox.c.id.in_(done)).values(published_at=func.now())
                )
                published = len(done)
            if failed is not None:
                await session.execute(
                    update(outbox).where(outbox.c.id == failed).values(attempts=outbox.c.attempts + 1)
                )
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(published)
        if failed is not None and not published:
            raise ConnectionError("JetStream did not accept the oldest pending event")
        return published

    async def refresh_backlog_metrics(self) -> None:
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.published_at.is_(None))
                )
            ).one()
        metrics.OUTBOX_PENDING.labels(self.service).set(row[0])
        age = (datetime.now(UTC) - row[1]).total_seconds() if row[1] is not None else 0.0
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(max(age, 0.0))

    async def run(self) -> None:
        """Relay loop: publish as soon as a commit wakes it, else poll; back off while NATS is down."""
        backoff = 0.0
        last_cleanup = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not self.bus.ready:
                    raise ConnectionError("NATS not connected")
                while await self.publish_pending() == self.batch_size:
                    pass
                backoff = 0.0
                await self.refresh_backlog_metrics()
                if loop.time() - last_cleanup > 300:
                    await self.cleanup()
                    last_cleanup = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.debug("outbox relay waiting %.1fs: %s", backoff, exc)
                try:
                    await self.refresh_backlog_metrics()
                except Exception as db_exc:
                    log.debug("outbox metrics unavailable: %s", db_exc)
                await asyncio.sleep(backoff)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            if stop_requested():
                raise asyncio.CancelledError

    async def cleanup(self) -> None:
        """Drop published events, handled-event ids and request ids past their retention."""
        cutoff = datetime.now(UTC) - self.retention
        async with self.db.transaction() as session:
            await session.execute(delete(outbox).where(outbox.c.published_at < cutoff))
            await session.execute(
                delete(processed_events).where(processed_events.c.processed_at < cutoff - timedelta(days=6))
            )
            await session.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < cutoff))
