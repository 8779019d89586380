"""The delivery schedule: a PostgreSQL-backed queue of due notifications, worked by every replica.

A pass claims due rows (``due_time <= now``, no live lease) with ``FOR UPDATE SKIP LOCKED`` and
gives them a lease (``lease_until``, ``lease_token``); two replicas never claim the same row, and a
row whose worker died comes back when its lease runs out. Each claimed notification then:

1. asks preferences when it must (held by quiet hours or a cap, or enqueued by an event):
   send, hold again, or suppress;
2. renders the template for its current channel in the customer's language (locale fallback);
3. records the attempt as SENDING with its idempotency key, and commits, *before* calling the
   provider; a worker that crashes after this re-sends with the same key: no duplicate where the
   provider honours the key (webhook, in-app), at most one where it does not (SMTP, Twilio, FCM);
4. calls the provider, then records the outcome under its lease: SENT; or a transient failure
   retried after back-off with jitter; or a permanent one (or an exhausted budget) that moves to
   the next allowed channel; FAILED when none is left. Every write checks the lease token, so a
   worker that lost its lease (it was too slow) cannot overwrite the work of the one that took over.

A commit that makes something due wakes this replica's worker at once; other replicas find it at
their next poll (``OMNI_MESSAGING_POLL_INTERVAL_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni_runtime.db.engine import after_commit
from omni_runtime.events.bus import stop_requested
from services.messaging import contacts, convert, events, metrics, notifications, store
from services.messaging.adapters import base
from services.messaging.adapters.preferences import PreferencesRefused, PreferencesUnavailable
from services.messaging.domain import delivery, plans
from services.messaging.domain import templates as rules
from services.messaging.domain.contacts import Destination
from services.messaging.unit import Unit

log = logging.getLogger("omni.messaging.schedule")

N = store.notifications
A = store.delivery_attempts
PENDING = res.NOTIFICATION_STATE_PENDING
SENT = res.NOTIFICATION_STATE_SENT
DELIVERED = res.NOTIFICATION_STATE_DELIVERED
FAILED = res.NOTIFICATION_STATE_FAILED
SUPPRESSED = res.NOTIFICATION_STATE_SUPPRESSED
A_SENDING = res.DELIVERY_ATTEMPT_STATE_SENDING
A_SENT = res.DELIVERY_ATTEMPT_STATE_SENT
A_DELIVERED = res.DELIVERY_ATTEMPT_STATE_DELIVERED
A_FAILED = res.DELIVERY_ATTEMPT_STATE_FAILED


channel_label = metrics.channel_label


class LeaseLost(Exception):
    """Another worker owns the notification now (ours expired): stop touching it."""


@dataclass
class Claim:
    row: store.AnyRow
    token: str


class DeliveryWorker:
    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(unit.config.concurrency)
        unit.wake = self._wake.set

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        last_backlog = 0.0
        while True:
            try:
                while await self.pass_() >= self.unit.config.batch_size:
                    pass
                metrics.WORKER_PASSES.labels("ok").inc()
                if time.monotonic() - last_backlog > 5:
                    await self.refresh_backlog()
                    last_backlog = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.WORKER_PASSES.labels("error").inc()
                log.warning("delivery pass failed; retrying: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.unit.config.poll_interval)
            if stop_requested():
                raise asyncio.CancelledError

    async def pass_(self) -> int:
        """Claim one batch of due notifications and work it; how many were claimed."""
        claims = await self.claim(self.unit.config.batch_size)
        if claims:
            ids = {c.row.template_id for c in claims}
            async with self.unit.db.transaction() as session:
                found = await session.execute(select(store.templates).where(store.templates.c.id.in_(ids)))
                templates = {t.id: t for t in found}
            await asyncio.gather(*(self._guarded(c, templates.get(c.row.template_id)) for c in claims))
        return len(claims)

    async def _guarded(self, claim: Claim, template: store.AnyRow | None) -> None:
        async with self._slots:
            try:
                await self.process(claim, template)
            except LeaseLost:
                log.warning("lost the lease of notification %s; another worker has it", claim.row.id)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Left leased: it comes back when the lease runs out, and is retried then.
                log.exception("delivering notification %s failed unexpectedly", claim.row.id)

    async def claim(self, limit: int) -> list[Claim]:
        now = self.unit.clock.now()
        token = uuid.uuid4().hex
        lease = self.unit.config.lease.total_seconds()
        async with self.unit.db.transaction() as session:
            due = (
                select(N.c.id)
                .where(N.c.due_time <= now, or_(N.c.lease_until.is_(None), N.c.lease_until < func.now()))
                .order_by(N.c.due_time)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .cte("due")
            )
            rows = (
                await session.execute(
                    update(N)
                    .where(N.c.id == due.c.id)
                    .values(
                        lease_until=func.now() + text(f"interval '{lease:.3f} seconds'"), lease_token=token
                    )
                    .returning(*N.c)
                )
            ).all()
        for row in rows:
            metrics.SCHEDULE_LAG.observe(max((now - row.due_time).total_seconds(), 0.0))
        return [Claim(row, token) for row in rows]

    async def refresh_backlog(self) -> None:
        now = self.unit.clock.now()
        async with self.unit.db.transaction() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(N.c.due_time)).where(
                        N.c.due_time <= now, or_(N.c.lease_until.is_(None), N.c.lease_until < func.now())
                    )
                )
            ).one()
        metrics.SCHEDULE_DUE.set(count)
        metrics.SCHEDULE_OLDEST_DUE.set(
            max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        )

    # -- one notification ---------------------------------------------------------------------

    async def process(self, claim: Claim, template: store.AnyRow | None) -> None:
        unit = self.unit
        row = claim.row
        now = unit.clock.now()
        if row.state != PENDING:
            await self._write(claim, due_time=None, lease_until=None)
            return
        if row.expire_time is not None and row.expire_time <= now:
            await self._suppress(claim, res.SUPPRESSION_REASON_EXPIRED)
            return
        if template is None:
            await self._suppress(claim, res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT)
            return
        if row.decide and row.consult:
            decided = await self._decide(claim, template, now)
            if decided is None:
                return
            claim = Claim(decided, claim.token)
        await self._deliver(claim, template)

    async def _decide(self, claim: Claim, template: store.AnyRow, now: datetime) -> store.AnyRow | None:
        """Ask preferences; the updated row when it may be sent now, else None (held/suppressed)."""
        unit = self.unit
        row = claim.row
        channels = notifications.deliverable(unit, template)
        if not channels or (row.requested_channel and row.requested_channel not in channels):
            await self._suppress(claim, res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT)
            return None
        try:
            decision = await unit.preferences.decide(
                row.customer,
                topic=row.topic,
                purpose=row.purpose,
                channel=row.requested_channel,
                eligible=channels,
                evaluate_time=now,
                request_id=notifications.decision_request_id(row.id, row.decisions),
            )
        except PreferencesUnavailable as exc:
            log.warning("preferences unavailable for %s; asking again later: %s", row.id, exc)
            wait = unit.config.retry.delay(min(row.decisions + 1, 10), unit.rng)
            await self._write(claim, due_time=now + wait, lease_until=None, decisions=row.decisions + 1)
            return None
        except PreferencesRefused as exc:
            log.error("preferences refused to decide for %s; it fails: %s", row.id, exc)
            await self._refused(claim, str(exc))
            return None
        plan = plans.plan(
            decision,
            requested=row.requested_channel,
            deliverable=channels,
            now=now,
            expire_time=row.expire_time,
            limits=unit.config.limits,
        )
        if isinstance(plan, plans.Suppress):
            await self._suppress(claim, plan.reason, decisions=row.decisions + 1)
            return None
        if isinstance(plan, plans.Hold):
            await self._write(
                claim,
                due_time=plan.until,
                lease_until=None,
                decisions=row.decisions + 1,
                language=plan.language,
            )
            metrics.count("held")
            return None
        return await self._write(
            claim,
            decide=False,
            decisions=row.decisions + 1,
            channels=list(plan.channels),
            language=plan.language,
            reserved_channel=plan.reserved_channel,
            tries=0,
        )

    async def _deliver(self, claim: Claim, template: store.AnyRow) -> None:
        unit = self.unit
        row = claim.row
        if not row.channels:
            await self._suppress(claim, res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT)
            return
        channel = row.channels[0]
        contents = convert.contents_from_json(template.contents)
        content = rules.pick(contents, channel, row.language, template.default_locale)
        if content is None:
            await self._next_channel(claim, channel, error=None)
            return
        if row.fixed_kind:
            destination: Destination | None = Destination(row.fixed_kind, row.fixed_value)
        else:
            destination = await contacts.resolve(unit, row.customer, channel)
        if destination is None:
            await self._failed_attempt(
                claim, channel, "", base.NO_CONTACT_POINT, "no contact point for the channel", transient=False
            )
            return
        provider = next((p for p in unit.providers.for_channel(channel) if p.accepts(destination)), None)
        if provider is None:
            await self._failed_attempt(
                claim,
                channel,
                destination.masked,
                base.MISCONFIGURED,
                f"no provider reaches a {destination.kind}",
                transient=False,
            )
            return
        params: Mapping[str, str] = row.params
        missing = [p for p in rules.params_of([content]) if p not in params]
        if missing:  # the template changed after the notification was accepted
            await self._next_channel(claim, channel, error=None)
            return
        rendered = rules.render(content, params)
        attempt_id, key = await self._begin_attempt(claim, channel, provider.name, destination)
        outbound = base.Outbound(
            channel=channel,
            destination=destination,
            subject=rendered.subject,
            body=rendered.body,
            html_body=rendered.html_body,
            idempotency_key=key,
            reference=convert.notification_name(row.id),
        )
        started = time.perf_counter()
        try:
            sent = await provider.send(outbound)
        except base.ProviderError as exc:
            metrics.PROVIDER_SECONDS.labels(provider.name).observe(time.perf_counter() - started)
            metrics.PROVIDER_REQUESTS.labels(
                provider.name, channel_label(channel), "transient" if exc.transient else "permanent"
            ).inc()
            await self._attempt_failed(claim, attempt_id, channel, exc)
            return
        metrics.PROVIDER_SECONDS.labels(provider.name).observe(time.perf_counter() - started)
        metrics.PROVIDER_REQUESTS.labels(provider.name, channel_label(channel), "ok").inc()
        await self._sent(claim, attempt_id, channel, sent, rendered)

    # -- writes under the lease ---------------------------------------------------------------

    async def _locked(self, session: AsyncSession, claim: Claim) -> store.AnyRow:
        row = (
            await session.execute(
                select(N).where(N.c.id == claim.row.id, N.c.lease_token == claim.token).with_for_update()
            )
        ).first()
        if row is None:
            raise LeaseLost(claim.row.id)
        return row

    async def _write(self, claim: Claim, **values: Any) -> store.AnyRow:
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            values.setdefault("update_time", self.unit.clock.now())
            row = (
                await session.execute(
                    update(N).where(N.c.id == claim.row.id).values(**values).returning(*N.c)
                )
            ).one()
            if values.get("due_time") is not None and values["due_time"] <= self.unit.clock.now():
                after_commit(session, self.unit.wake)
            return row

    async def _suppress(self, claim: Claim, reason: int, **values: Any) -> None:
        now = self.unit.clock.now()
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            row = (
                await session.execute(
                    update(N)
                    .where(N.c.id == claim.row.id)
                    .values(
                        state=SUPPRESSED,
                        suppression_reason=reason,
                        due_time=None,
                        lease_until=None,
                        update_time=now,
                        **values,
                    )
                    .returning(*N.c)
                )
            ).one()
            await self.unit.outbox.emit(session, events.suppressed(row, now))
        metrics.count("suppressed", 0, reason)

    async def _begin_attempt(
        self, claim: Claim, channel: int, provider: str, destination: Destination
    ) -> tuple[int, str]:
        """Record the attempt (SENDING) before the provider is called; a crashed worker's SENDING
        attempt on the same channel is resumed with its idempotency key."""
        now = self.unit.clock.now()
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            last = (
                await session.execute(
                    select(A).where(A.c.notification_id == claim.row.id).order_by(A.c.id.desc()).limit(1)
                )
            ).first()
            if (
                last is not None
                and last.state == A_SENDING
                and last.channel == channel
                and last.provider == provider
            ):
                await session.execute(update(A).where(A.c.id == last.id).values(update_time=now))
                return int(last.id), str(last.idempotency_key)
            count = (
                await session.execute(
                    select(func.count()).select_from(A).where(A.c.notification_id == claim.row.id)
                )
            ).scalar_one()
            key = f"{claim.row.id}.{count + 1}"
            attempt_id = (
                await session.execute(
                    A.insert()
                    .values(
                        notification_id=claim.row.id,
                        channel=channel,
                        provider=provider,
                        state=A_SENDING,
                        destination=destination.masked,
                        idempotency_key=key,
                        attempt_time=now,
                        update_time=now,
                    )
                    .returning(A.c.id)
                )
            ).scalar_one()
            return int(attempt_id), key

    async def _sent(
        self, claim: Claim, attempt_id: int, channel: int, sent: base.Sent, rendered: rules.Rendered
    ) -> None:
        unit = self.unit
        now = unit.clock.now()
        async with unit.db.transaction() as session:
            await self._locked(session, claim)
            await session.execute(
                update(A)
                .where(A.c.id == attempt_id)
                .values(
                    state=A_DELIVERED if sent.delivered else A_SENT,
                    provider_message_id=sent.provider_message_id,
                    update_time=now,
                )
            )
            row = (
                await session.execute(
                    update(N)
                    .where(N.c.id == claim.row.id)
                    .values(
                        state=DELIVERED if sent.delivered else SENT,
                        chosen_channel=channel,
                        locale=rendered.locale,
                        rendered_subject=rendered.subject,
                        rendered_body=rendered.body,
                        deliver_time=now if sent.delivered else None,
                        due_time=None,
                        lease_until=None,
                        update_time=now,
                    )
                    .returning(*N.c)
                )
            ).one()
            await unit.outbox.emit(session, events.sent(row, channel, now))
            if sent.delivered:
                await unit.outbox.emit(session, events.delivered(row, channel, now))
        metrics.count("sent", channel)
        if sent.delivered:
            metrics.count("delivered", channel)
        if (
            row.purpose in (pref.CONTACT_PURPOSE_MARKETING, pref.CONTACT_PURPOSE_UNSPECIFIED)
            and row.consult
            and channel != row.reserved_channel
        ):
            await self._record_contact(row, channel, now)

    async def _refused(self, claim: Claim, message: str) -> None:
        """Preferences will not decide (it refused the question): FAILED, with the refusal as the
        attempt, so the operator sees why instead of a notification pending for ever."""
        now = self.unit.clock.now()
        channel = claim.row.requested_channel
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            count = (
                await session.execute(
                    select(func.count()).select_from(A).where(A.c.notification_id == claim.row.id)
                )
            ).scalar_one()
            await session.execute(
                A.insert().values(
                    notification_id=claim.row.id,
                    channel=channel,
                    provider="preferences",
                    state=A_FAILED,
                    error_code=base.PREFERENCES_REFUSED,
                    error_message=message[:500],
                    idempotency_key=f"{claim.row.id}.{count + 1}",
                    attempt_time=now,
                    update_time=now,
                )
            )
            final = (
                await session.execute(
                    update(N)
                    .where(N.c.id == claim.row.id)
                    .values(state=FAILED, due_time=None, lease_until=None, update_time=now)
                    .returning(*N.c)
                )
            ).one()
            attempts = (
                await session.execute(select(A).where(A.c.notification_id == claim.row.id).order_by(A.c.id))
            ).all()
            await self.unit.outbox.emit(session, events.failed(final, attempts, now))
        metrics.count("failed", channel)

    async def _record_contact(self, row: store.AnyRow, channel: int, now: datetime) -> None:
        """A marketing contact made on a channel the decision did not reserve (a fallback)."""
        try:
            await self.unit.preferences.record_contact(
                row.customer,
                channel=channel,
                topic=row.topic,
                purpose=row.purpose,
                contact_time=now,
                request_id=notifications.decision_request_id(row.id, -channel),
            )
        except (PreferencesUnavailable, PreferencesRefused) as exc:
            log.warning("RecordContact for %s failed; the contact is not counted: %s", row.id, exc)

    async def _attempt_failed(
        self, claim: Claim, attempt_id: int, channel: int, error: base.ProviderError
    ) -> None:
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            await session.execute(
                update(A)
                .where(A.c.id == attempt_id)
                .values(
                    state=A_FAILED,
                    error_code=error.code,
                    error_message=(f"{error.provider_code}: " if error.provider_code else "")
                    + error.message[:500],
                    update_time=self.unit.clock.now(),
                )
            )
        await self._after_failure(claim, channel, transient=error.transient, retry_after=error.retry_after)

    async def _failed_attempt(
        self, claim: Claim, channel: int, masked: str, code: str, message: str, *, transient: bool
    ) -> None:
        """An attempt that failed before reaching a provider (no address, no provider)."""
        now = self.unit.clock.now()
        async with self.unit.db.transaction() as session:
            await self._locked(session, claim)
            count = (
                await session.execute(
                    select(func.count()).select_from(A).where(A.c.notification_id == claim.row.id)
                )
            ).scalar_one()
            await session.execute(
                A.insert().values(
                    notification_id=claim.row.id,
                    channel=channel,
                    provider="",
                    state=A_FAILED,
                    destination=masked,
                    error_code=code,
                    error_message=message,
                    idempotency_key=f"{claim.row.id}.{count + 1}",
                    attempt_time=now,
                    update_time=now,
                )
            )
        await self._after_failure(claim, channel, transient=transient, retry_after=None)

    async def _after_failure(self, claim: Claim, channel: int, *, transient: bool, retry_after: Any) -> None:
        unit = self.unit
        row = claim.row
        now = unit.clock.now()
        step = delivery.after_failure(
            transient=transient,
            tries_on_channel=row.tries + 1,
            remaining_channels=tuple(row.channels[1:]),
            policy=unit.config.retry,
            now=now,
            rng=unit.rng,
            retry_after=retry_after,
        )
        if isinstance(step, delivery.Retry):
            await self._write(
                claim, tries=row.tries + 1, due_time=step.at, lease_until=None, chosen_channel=channel
            )
        else:
            await self._next_channel(claim, channel, error=step)

    async def _next_channel(self, claim: Claim, channel: int, *, error: delivery.Step | None) -> None:
        """Give up ``channel``: on to the next allowed one, or FAILED (SUPPRESSED when no channel
        had an address at all)."""
        unit = self.unit
        row = claim.row
        remaining = list(row.channels[1:])
        now = unit.clock.now()
        if remaining:
            await self._write(
                claim,
                channels=remaining,
                failed_channels=[*row.failed_channels, channel],
                tries=0,
                due_time=now,
                lease_until=None,
                chosen_channel=channel,
            )
            return
        async with unit.db.transaction() as session:
            await self._locked(session, claim)
            attempts = (
                await session.execute(select(A).where(A.c.notification_id == row.id).order_by(A.c.id))
            ).all()
            if not attempts or all(a.error_code == base.NO_CONTACT_POINT for a in attempts):
                reason = (
                    res.SUPPRESSION_REASON_NO_CONTACT_POINT
                    if attempts
                    else res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT
                )
                final = (
                    await session.execute(
                        update(N)
                        .where(N.c.id == row.id)
                        .values(
                            state=SUPPRESSED,
                            suppression_reason=reason,
                            due_time=None,
                            lease_until=None,
                            update_time=now,
                        )
                        .returning(*N.c)
                    )
                ).one()
                await unit.outbox.emit(session, events.suppressed(final, now))
                state, counted = "suppressed", int(reason)
            else:
                final = (
                    await session.execute(
                        update(N)
                        .where(N.c.id == row.id)
                        .values(
                            state=FAILED,
                            failed_channels=[*row.failed_channels, channel],
                            channels=[],
                            chosen_channel=channel,
                            due_time=None,
                            lease_until=None,
                            update_time=now,
                        )
                        .returning(*N.c)
                    )
                ).one()
                await unit.outbox.emit(session, events.failed(final, attempts, now))
                state, counted = "failed", 0
        metrics.count(state, channel, counted)
