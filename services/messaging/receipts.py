"""Delivery receipts: what providers report after accepting a message, applied to its attempt.

Receipts only move forward: SENT → DELIVERED (also implied by an open or a click); a FAILED
report (bounce, undeliverable) on the attempt a SENT notification rests on sends it back to the
schedule for its next allowed channel, or makes it FAILED. Repeats and late reports change
nothing, which is what providers that retry their callbacks need.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.messaging.v1 import resources_pb2 as res
from omni_runtime.db.engine import after_commit
from omni_runtime.errors import NotFound
from services.messaging import convert, events, metrics, store
from services.messaging.adapters import base
from services.messaging.domain import DOMAIN
from services.messaging.unit import Unit

N = store.notifications
A = store.delivery_attempts
S = res.DeliveryReceiptStatus


async def apply(
    unit: Unit,
    session: AsyncSession,
    *,
    provider: str,
    provider_message_id: str,
    status: int,
    error_code: str = "",
    error_message: str = "",
    url: str = "",
    occur_time: datetime | None = None,
) -> res.Notification:
    """Apply one receipt in ``session``; the notification after it."""
    attempt = (
        await session.execute(
            select(A)
            .where(A.c.provider == provider, A.c.provider_message_id == provider_message_id)
            .with_for_update()
        )
    ).first()
    if attempt is None:
        raise NotFound(
            f"providers/{provider}/messages/{provider_message_id}",
            f"no delivery attempt of {provider} has message id {provider_message_id}",
            reason="UNKNOWN_PROVIDER_MESSAGE",
            domain=DOMAIN,
        )
    row = (await session.execute(select(N).where(N.c.id == attempt.notification_id).with_for_update())).one()
    now = unit.clock.now()
    when = occur_time or now
    latest = (
        await session.execute(
            select(A.c.id).where(A.c.notification_id == row.id).order_by(A.c.id.desc()).limit(1)
        )
    ).scalar_one()
    label = S.Name(status).removeprefix("DELIVERY_RECEIPT_STATUS_").lower()  # type: ignore[arg-type]
    after_commit(session, lambda: metrics.RECEIPTS.labels(provider, label).inc())
    values: dict[str, object] = {}
    if status == res.DELIVERY_RECEIPT_STATUS_FAILED:
        if attempt.state in (res.DELIVERY_ATTEMPT_STATE_SENT, res.DELIVERY_ATTEMPT_STATE_SENDING):
            await session.execute(
                update(A)
                .where(A.c.id == attempt.id)
                .values(
                    state=res.DELIVERY_ATTEMPT_STATE_FAILED,
                    error_code=base.BOUNCED,
                    error_message=f"{error_code}: {error_message}".strip(": ")[:500],
                    update_time=now,
                )
            )
            if row.state == res.NOTIFICATION_STATE_SENT and latest == attempt.id:
                remaining = list(row.channels[1:])
                values.update(
                    failed_channels=[*row.failed_channels, attempt.channel], tries=0, lease_until=None
                )
                if remaining:  # back to the schedule, on the next allowed channel
                    values.update(state=res.NOTIFICATION_STATE_PENDING, channels=remaining, due_time=now)
                else:
                    values.update(state=res.NOTIFICATION_STATE_FAILED, channels=[], due_time=None)
    else:
        if attempt.state in (res.DELIVERY_ATTEMPT_STATE_SENT, res.DELIVERY_ATTEMPT_STATE_SENDING):
            await session.execute(
                update(A)
                .where(A.c.id == attempt.id)
                .values(state=res.DELIVERY_ATTEMPT_STATE_DELIVERED, update_time=now)
            )
        if row.state == res.NOTIFICATION_STATE_SENT and latest == attempt.id:
            values.update(state=res.NOTIFICATION_STATE_DELIVERED, deliver_time=when)
            await unit.outbox.emit(session, events.delivered(row, attempt.channel, when))
            after_commit(session, lambda: metrics.count("delivered", attempt.channel))
        if status == res.DELIVERY_RECEIPT_STATUS_OPENED and row.open_time is None:
            values["open_time"] = when
            await unit.outbox.emit(session, events.opened(row, attempt.channel, when))
        if status == res.DELIVERY_RECEIPT_STATUS_CLICKED and row.click_time is None:
            values["click_time"] = when
            await unit.outbox.emit(session, events.clicked(row, attempt.channel, url, when))
    if values:
        values["update_time"] = now
        row = (
            await session.execute(update(N).where(N.c.id == row.id).values(**values).returning(*N.c))
        ).one()
    if values.get("state") == res.NOTIFICATION_STATE_PENDING:
        after_commit(session, unit.wake)
    if values.get("state") == res.NOTIFICATION_STATE_FAILED:
        every = (await session.execute(select(A).where(A.c.notification_id == row.id).order_by(A.c.id))).all()
        await unit.outbox.emit(session, events.failed(row, every, now))
        after_commit(session, lambda: metrics.count("failed", attempt.channel))
    attempts = (await session.execute(select(A).where(A.c.notification_id == row.id).order_by(A.c.id))).all()
    return convert.notification(row, attempts)
